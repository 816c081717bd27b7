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
  testParseIPv6 = {
    expr = map ip.parseIPv6 [ "2001:db8::1" "::" "::1" "1::" "1:2:3:4:5:6:7:8" "FFFF::abcd" "::ffff:192.0.2.1" "1:2:3:4:5:6:1.2.3.4" ];
    expected = [
      [ 8193 3512 0 0 0 0 0 1 ] [ 0 0 0 0 0 0 0 0 ] [ 0 0 0 0 0 0 0 1 ] [ 1 0 0 0 0 0 0 0 ] [ 1 2 3 4 5 6 7 8 ]
      [ 65535 0 0 0 0 0 0 43981 ] [ 0 0 0 0 0 65535 49152 513 ] [ 1 2 3 4 5 6 258 772 ]
    ];
  };
  testParseIPv6Refused = {
    expr = map ip.parseIPv6 [ ":" ":::" "1::2::3" "1:2:3:4:5:6:7:8:9" "1:2:3:4:5:6:7" "1:2:3:4:5:6:7:8::" "12345::" "g::" ":1::" "1::2:" "1.2.3.4::" "::1.2.3" "fe80::1%eth0" "" 42 ];
    expected = [ null null null null null null null null null null null null null null null ];
  };
  testParseCidr6 = {
    expr = map ip.parseCidr6 [ "::/0" "2001:db8::/32" "2001:db8:8000::/33" "::1/128" ];
    expected = [
      { groups = [ 0 0 0 0 0 0 0 0 ]; prefixLength = 0; }
      { groups = [ 8193 3512 0 0 0 0 0 0 ]; prefixLength = 32; }
      { groups = [ 8193 3512 32768 0 0 0 0 0 ]; prefixLength = 33; }
      { groups = [ 0 0 0 0 0 0 0 1 ]; prefixLength = 128; }
    ];
  };
  testParseCidr6RefusesHostBits = {
    expr = map ip.parseCidr6 [ "2001:db8::1/32" "2001:db8:4000::/33" "::1/127" "::/129" "::/" "::" "2001:db8::/032" ];
    expected = [ null null null null null null null ];
  };
}
