let
  sh = import ../shell.nix;
in
{
  testSafeWordUnquoted = { expr = map sh.escapeShellArg [ "curl" "-fsS" "/dev/null" "a,b.c_d+e:f@g%h/i-j" "5" ]; expected = [ "curl" "-fsS" "/dev/null" "a,b.c_d+e:f@g%h/i-j" "5" ]; };
  testEmptyIsQuoted = { expr = sh.escapeShellArg ""; expected = "''"; };
  testMetacharactersQuoted = {
    expr = map sh.escapeShellArg [ "a&b" "x;touch /tmp/P" "$(id)" "`id`" "a b" "*" "~" "a\nb" ];
    expected = [ "'a&b'" "'x;touch /tmp/P'" "'$(id)'" "'`id`'" "'a b'" "'*'" "'~'" "'a\nb'" ];
  };
  testSingleQuoteEscaped = { expr = sh.escapeShellArg "it's"; expected = "'it'\\''s'"; };
  testNumberIsToString = { expr = sh.escapeShellArg 8080; expected = "8080"; };
  testArgs = { expr = sh.escapeShellArgs [ "echo" "a b" "it's" ]; expected = "echo 'a b' 'it'\\''s'"; };
}
