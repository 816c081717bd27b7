# Hardware of a Hetzner Cloud VM: QEMU guest, GRUB on a GPT disk with a BIOS
# boot partition, one ext4 root laid out by disko (nixos-anywhere runs it),
# IPv4 by DHCP and the server's routed IPv6 /64 (from facts/<node>.json).
# Needs disko's NixOS module imported (the flake's node systems do).
{ config, lib, modulesPath, ... }:
let
  cfg = config.nixInfra.hetzner;
  inherit (lib) mkDefault mkEnableOption mkIf mkOption types;
in
{
  imports = [ (modulesPath + "/profiles/qemu-guest.nix") ];

  options.nixInfra.hetzner = {
    enable = mkEnableOption "the Hetzner Cloud VM hardware profile (disk layout, boot loader)";

    disk = mkOption {
      type = types.str;
      default = "/dev/sda";
      description = "The system disk disko partitions (Hetzner Cloud: /dev/sda).";
    };

    publicInterface = mkOption {
      type = types.str;
      default = "enp1s0";
      description = "The public interface (Hetzner Cloud: enp1s0 on current server types).";
    };

    ipv6Network = mkOption {
      type = types.nullOr (types.strMatching "[0-9a-f:]+::/64");
      default = null;
      example = "2a01:4f8:c17:b8f8::/64";
      description = ''
        The server's routed IPv6 /64 as Hetzner reports it (facts/<node>.json
        `publicIpv6`, filled in by mkClusterFlake). The node takes its ::1,
        with Hetzner's gateway fe80::1. null: IPv4 only.
      '';
    };
  };

  config = mkIf cfg.enable {
    disko.devices.disk.main = {
      type = "disk";
      device = cfg.disk;
      content = {
        type = "gpt";
        partitions = {
          # Hetzner VMs boot with BIOS: GRUB needs a 1M BIOS boot partition on GPT.
          boot = {
            size = "1M";
            type = "EF02";
          };
          root = {
            size = "100%";
            content = {
              type = "filesystem";
              format = "ext4";
              mountpoint = "/";
            };
          };
        };
      };
    };

    boot.loader.grub.enable = mkDefault true;
    # Lets Hetzner's console reset the root password and report the IP.
    services.qemuGuest.enable = mkDefault true;
    # IPv4 comes by DHCP on the public interface.
    networking.useDHCP = mkDefault true;

    # IPv6 is static: Hetzner routes the /64 to the server, the gateway is link-local.
    networking.interfaces.${cfg.publicInterface}.ipv6.addresses = lib.optional (cfg.ipv6Network != null) {
      address = "${lib.removeSuffix "/64" cfg.ipv6Network}1";
      prefixLength = 64;
    };
    networking.defaultGateway6 = mkIf (cfg.ipv6Network != null) {
      address = "fe80::1";
      interface = cfg.publicInterface;
    };
  };
}
