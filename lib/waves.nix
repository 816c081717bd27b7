# Deploy waves: the order in which nodes are switched.
rec {
  /**
    Deploy waves: each ctrl node alone, in name order (so etcd keeps its
    quorum), then every other node in one wave (the orchestrator runs it in
    bounded-parallel batches).

    Takes normalized nodes; returns a list of lists of node names.

    Example: waves { ctrl001 = { type = "ctrl"; }; w1 = { type = "worker"; }; }
      => [ [ "ctrl001" ] [ "w1" ] ]
  */
  waves =
    nodes:
    let
      names = builtins.attrNames nodes;
      parts = builtins.partition (n: nodes.${n}.type == "ctrl") names;
    in
    map (n: [ n ]) parts.right ++ (if parts.wrong == [ ] then [ ] else [ parts.wrong ]);

  /**
    The wave index of every node: name -> int.

    Example: waveOf [ [ "ctrl001" ] [ "w1" "w2" ] ] => { ctrl001 = 0; w1 = 1; w2 = 1; }
  */
  waveOf =
    ws:
    builtins.listToAttrs (
      builtins.concatLists (builtins.genList (i: map (n: { name = n; value = i; }) (builtins.elemAt ws i)) (builtins.length ws))
    );
}
