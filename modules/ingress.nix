# Ingress: nginx terminating TLS with ACME certificates (Let's Encrypt), each
# virtual host proxying to one frontend app through this node's mesh proxy
# (127.0.0.1:<publish port>), so traffic reaches whichever instances are healthy.
{ config, lib, ... }:
let
  cfg = config.nixInfra.ingress;
  inherit (lib) mapAttrs mapAttrsToList mkDefault mkEnableOption mkIf mkOption types;
in
{
  options.nixInfra.ingress = {
    enable = mkEnableOption "the TLS-terminating ingress (nginx + ACME) in front of the frontends";

    frontends = mkOption {
      type = types.attrsOf types.port;
      default = { };
      description = "Frontend apps this node's mesh proxy serves: app name -> 127.0.0.1 port (from lib).";
    };

    acmeEmail = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "ops@example.com";
      description = "Contact address for the ACME account (Let's Encrypt).";
    };

    virtualHosts = mkOption {
      type = types.attrsOf (types.submodule {
        options.app = mkOption { type = types.str; description = "The frontend app this host name serves."; };
      });
      default = { };
      example = { "www.example.com".app = "web"; };
      description = "Public host names and the frontend app each one serves.";
    };
  };

  config = mkIf cfg.enable {
    assertions =
      [
        {
          assertion = cfg.virtualHosts == { } || cfg.acmeEmail != null;
          message = "nixInfra.ingress.acmeEmail is needed for ACME certificates.";
        }
      ]
      ++ mapAttrsToList (host: v: {
        assertion = cfg.frontends ? ${v.app};
        message = "nixInfra.ingress.virtualHosts.\"${host}\".app: ${v.app} is not a frontend this node consumes (${toString (builtins.attrNames cfg.frontends)}).";
      }) cfg.virtualHosts;

    security.acme = mkIf (cfg.acmeEmail != null) {
      acceptTerms = true;
      defaults.email = cfg.acmeEmail;
    };

    services.nginx = {
      enable = true;
      # sane proxy headers and TLS settings from upstream
      recommendedProxySettings = mkDefault true;
      recommendedTlsSettings = mkDefault true;
      virtualHosts = mapAttrs (host: v: {
        enableACME = true;
        forceSSL = true;
        locations."/".proxyPass = "http://127.0.0.1:${toString (cfg.frontends.${v.app} or 0)}";
      }) cfg.virtualHosts;
    };
  };
}
