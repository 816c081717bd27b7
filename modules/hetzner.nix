# Hardware of a Hetzner Cloud VM: QEMU guest, GRUB on a GPT disk with a BIOS
# boot partition, one ext4 root laid out by disko (nixos-anywhere runs it).
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
  };
}
