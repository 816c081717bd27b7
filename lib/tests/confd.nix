let
  confd = import ../confd.nix;
  t = confd.haproxyTemplate "worker001";
  has = needle: builtins.match ".*${needle}.*" (builtins.replaceStrings [ "\n" ] [ " " ] t) != null;
in
{
  testHeaderFirst = { expr = builtins.substring 0 6 confd.header; expected = "global"; };
  testTemplateReadsOwnRecord = { expr = has ''getv "/cluster/nodes/worker001"''; expected = true; };
  testTemplateBindsLoopbackOnly = { expr = has "bind 127\\.0\\.0\\.1:\\{\\{ \\$publish }}"; expected = true; };
  # confd's json aborts the render on invalid JSON: records are cut with split instead
  testTemplateNeverParsesJson = { expr = has "json"; expected = false; };
  testTemplateSkipsReservedPorts = { expr = has ''\$reserved := ",22,80,443,2379,2380,5000,5080,51820,"''; expected = true; };
  testTemplateNamesServersAfterTheKey = { expr = has "\\$node := base \\.Key.*server \\{\\{ \\$node }}"; expected = true; };
  # an instance renders only at its node's admin-written address and the app's port
  testTemplateChecksTheNodeAddress = { expr = has ''getv \(printf "/cluster/nodes/%s" \$node\) ""''; expected = true; };
  testTemplateChecksTheAppPort = { expr = has "[(]eq [$]port [$]appPort[)]"; expected = true; };
  testTemplateReadsInstances = { expr = has "/cluster/%s/%s/instances/\\*"; expected = true; };
  testTemplateStartsWithHeader = {
    expr = builtins.substring 0 (builtins.stringLength confd.header) (builtins.elemAt (builtins.split "edit\n" t) 2);
    expected = confd.header;
  };
  testResourceToml = {
    expr = confd.resourceToml { src = "mesh.tmpl"; dest = "/d"; checkCmd = "haproxy -c -f {{.src}}"; reloadCmd = "r"; };
    expected = ''
      [template]
      src = "mesh.tmpl"
      dest = "/d"
      keys = ["/cluster"]
      mode = "0644"
      check_cmd = "haproxy -c -f {{.src}}"
      reload_cmd = "r"
    '';
  };
}
