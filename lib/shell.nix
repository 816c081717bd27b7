# Shell quoting on builtins only, with the semantics of nixpkgs'
# lib.escapeShellArg, so a value built here reaches `bash -c` as one word.
rec {
  /**
    Quote a string so the shell reads it as exactly one word with no
    expansion: strings of only `[[:alnum:],._+:@%/-]` stay as they are,
    anything else is put in single quotes (a `'` becomes `'\''`). Same
    semantics as nixpkgs' lib.escapeShellArg.

    Takes a string (or anything `toString` accepts); returns a string.

    Example: escapeShellArg "http://127.0.0.1:8080/h?a=1&b=2"
      => "'http://127.0.0.1:8080/h?a=1&b=2'"
    Example: escapeShellArg "curl" => "curl"
  */
  escapeShellArg =
    arg:
    let
      string = toString arg;
    in
    if builtins.match "[[:alnum:],._+:@%/-]+" string == null then
      "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] string}'"
    else
      string;

  /**
    Quote every element of a list (escapeShellArg) and join them with spaces:
    a command line whose words are exactly the list.

    Example: escapeShellArgs [ "echo" "a b" "it's" ] => "echo 'a b' 'it'\\''s'"
  */
  escapeShellArgs = args: builtins.concatStringsSep " " (map escapeShellArg args);
}
