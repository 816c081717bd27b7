let ip = import ../ip.nix; in
{
  testParseIPv4 = { expr = ip.parseIPv4 "10.0.0.1"; expected = 167772161; };
  testParseIPv4Max = { expr = ip.parseIPv4 "255.255.255.255"; expected = 4294967295; };
  testParseIPv4RejectsOctet = { expr = ip.parseIPv4 "10.0.0.256"; expected = null; };
  testParseIPv4RejectsLeadingZero = { expr = ip.parseIPv4 "10.0.0.01"; expected = null; };
  testParseIPv4RejectsShort = { expr = ip.parseIPv4 "10.0.1"; expected = null; };
  testParseIPv4RejectsNonString = { expr = ip.parseIPv4 42; expected = null; };
  testFormatIPv4 = { expr = ip.formatIPv4 167772161; expected = "10.0.0.1"; };
  testRoundTrip = { expr = ip.formatIPv4 (ip.parseIPv4 "192.168.77.254"); expected = "192.168.77.254"; };
  testParseCidr = {
    expr = ip.parseCidr "10.10.0.0/16";
    expected = { base = 168427520; prefixLength = 16; size = 65536; last = 168493055; };
  };
  testParseCidrRejectsHostBits = { expr = ip.parseCidr "10.10.0.1/16"; expected = null; };
  testParseCidrRejectsLength = { expr = ip.parseCidr "10.0.0.0/33"; expected = null; };
  testInCidr = { expr = ip.inCidr (ip.parseCidr "10.0.0.0/8") (ip.parseIPv4 "10.1.2.3"); expected = true; };
  testNotInCidr = { expr = ip.inCidr (ip.parseCidr "10.0.0.0/8") (ip.parseIPv4 "11.0.0.0"); expected = false; };
  testIsPrivate = { expr = map ip.isPrivateCidr [ "10.10.0.0/16" "172.16.0.0/12" "172.32.0.0/16" "192.168.1.0/24" "8.8.8.0/24" "10.0.0.0/7" ]; expected = [ true true false true false false ]; };
  testMod = { expr = map (x: ip.mod x 3) [ 0 1 2 3 7 ]; expected = [ 0 1 2 0 1 ]; };
}
