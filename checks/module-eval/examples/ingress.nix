# nixosModules.ingress: nginx with ACME in front of a frontend reached through the mesh
{ nix-infra, ... }:
{
  imports = [ nix-infra.nixosModules.ingress ];
  nixInfra.ingress = {
    enable = true;
    frontends.web = 5100;
    acmeEmail = "ops@example.com";
    virtualHosts."www.example.com".app = "web";
  };
}
