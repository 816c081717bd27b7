let
  w = import ../waves.nix;
  nodes = {
    ctrl003 = { type = "ctrl"; }; ctrl001 = { type = "ctrl"; }; ctrl002 = { type = "ctrl"; };
    worker001 = { type = "worker"; }; ingress001 = { type = "ingress"; }; db = { type = "service"; };
  };
in
{
  testWaves = { expr = w.waves nodes; expected = [ [ "ctrl001" ] [ "ctrl002" ] [ "ctrl003" ] [ "db" "ingress001" "worker001" ] ]; };
  testOnlyCtrl = { expr = w.waves { c = { type = "ctrl"; }; }; expected = [ [ "c" ] ]; };
  testWaveOf = { expr = w.waveOf [ [ "ctrl001" ] [ "w1" "w2" ] ]; expected = { ctrl001 = 0; w1 = 1; w2 = 1; }; };
}
