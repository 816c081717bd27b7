let
  a = import ../addresses.nix;
  p16 = a.plan "10.10.0.0/16";
  p24 = a.plan "192.168.5.0/24";
  node = name: type: { inherit name type; privateIp = null; };
in
{
  testNodeNumber = { expr = map a.nodeNumber [ "worker017" "db" "ctrl001" "web-2" "x0" "n1234567890" ]; expected = [ 17 null 1 2 null 1000000000 ]; };
  testPlan16 = { expr = [ p16.blockSize ((import ../ip.nix).formatIPv4 p16.hashedStart) p16.hashedSize ]; expected = [ 8192 "10.10.192.0" 16383 ]; };
  testNumberedByType = {
    expr = map (x: (a.derive p16 x.n x.t).ip) [ { n = "ctrl001"; t = "ctrl"; } { n = "worker001"; t = "worker"; } { n = "svc300"; t = "service"; } { n = "ingress002"; t = "ingress"; } { n = "registry001"; t = "registry"; } ];
    expected = [ "10.10.32.1" "10.10.64.1" "10.10.97.44" "10.10.128.2" "10.10.160.1" ];
  };
  testSmallNetwork = { expr = (a.derive p24 "worker031" "worker").ip; expected = "192.168.5.95"; };
  testNumberTooLarge = { expr = (a.derive p24 "worker032" "worker").ip; expected = null; };
  testHashedInRange = {
    expr = builtins.all (n: let x = (import ../ip.nix).parseIPv4 (a.derive p24 n "worker").ip; in x >= p24.hashedStart && x < p24.net.last) [ "db" "gateway" "cache" "a" "b" "c" "postgres" "valkey" "minio" "grafana" ];
    expected = true;
  };
  testHashedIsDeterministic = { expr = (a.derive p16 "db" "service").ip == (a.derive p16 "db" "worker").ip; expected = true; };
  testOverrideGateway = { expr = a.overrideError p16 "db" "10.10.0.1"; expected = "nodes.db.privateIp: 10.10.0.1 is the gateway of 10.10.0.0/16 (Hetzner reserves the first host); pick another address"; };
  testOverrideNetwork = { expr = a.overrideError p16 "db" "10.10.0.0"; expected = "nodes.db.privateIp: 10.10.0.0 is the network address of 10.10.0.0/16; pick a host address"; };
  testOverrideBroadcast = { expr = a.overrideError p16 "db" "10.10.255.255"; expected = "nodes.db.privateIp: 10.10.255.255 is the broadcast address of 10.10.0.0/16; pick a host address"; };
  testOverrideOutside = { expr = a.overrideError p16 "db" "10.11.0.5"; expected = "nodes.db.privateIp: 10.11.0.5 is outside provider.network 10.10.0.0/16"; };
  testOverrideOk = { expr = a.overrideError p16 "db" "10.10.0.2"; expected = null; };
  testAssignExplicit = { expr = (a.assign "10.10.0.0/16" { db = { name = "db"; type = "service"; privateIp = "10.10.0.9"; }; }).db; expected = { ip = "10.10.0.9"; how = "explicit"; }; };
  testAssignNeverReserved = {
    # no derived address of a small network is ever its network, gateway or broadcast address
    expr = builtins.filter (x: builtins.elem x [ "192.168.5.0" "192.168.5.1" "192.168.5.255" ]) (map (i: (a.derive p24 "n${toString i}x" "worker").ip) (builtins.genList (i: i) 200) ++ map (i: (a.derive p24 "w${toString (i + 1)}" "worker").ip) (builtins.genList (i: i) 31));
    expected = [ ];
  };
  testAssignIgnoresOtherNodes = {
    expr = (a.assign "10.10.0.0/16" { w1 = node "w1" "worker"; }).w1 == (a.assign "10.10.0.0/16" { w1 = node "w1" "worker"; w2 = node "w2" "worker"; db = node "db" "service"; }).w1;
    expected = true;
  };
}
