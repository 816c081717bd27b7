# Stand-ins of every upstream NixOS (and disko) option nix-infra's modules set
# or read, typed as upstream declares them, grouped by the nixpkgs file that
# declares them (`file`). Where upstream turns an option into a unit or an
# assertion that our modules merge into or rely on, `config` does the same in
# miniature (e.g. oci-containers generates podman-<name>.service; systemd warns
# about ordering after network-online.target without depending on it).
#
# This is the one list of upstream options nix-infra uses: docs/nixos-options.md
# is checked against it (tests/test_module_eval.py), and the module evaluation
# check (./default.nix) evaluates every node against it with the real nixpkgs lib.
# Read from the NixOS sources (nixos-26.05; see shared/reference/nixos-facts.md).
{ lib, pkgs }:
let
  inherit (lib) mkOption mkEnableOption mkIf mkDefault types;
  opt = type: default: mkOption { inherit type default; };
  req = type: mkOption { inherit type; };
  bool = opt types.bool false;
  strList = opt (types.listOf types.str) [ ];

  # nixos/lib/systemd-unit-options.nix: unit names in dependency lists
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";
  # nixos/lib/systemd-types.nix `unitOption`: lists concatenate, scalars must agree
  unitOption = lib.mkOptionType {
    name = "systemd option";
    check = v: builtins.isString v || builtins.isInt v || builtins.isBool v || builtins.isList v || lib.isDerivation v || builtins.isPath v;
    merge =
      loc: defs:
      let
        defs' = lib.filterOverrides defs;
      in
      if lib.any (d: builtins.isList d.value) defs' then
        lib.concatMap (d: lib.toList d.value) defs'
      else
        lib.mergeEqualOption loc defs';
  };
  unitDeps = opt (types.listOf unitNameType) [ ];
  # nixos/lib/systemd-lib.nix checkService: Type= and Restart= take known values only
  # (definitions wrapped by mkDefault/mkForce are unwrapped first, as upstream does)
  unwrap = v: if (v._type or null) == "override" then v.content else v;
  oneOf = name: values: cfg: !(cfg ? ${name}) || builtins.elem (unwrap cfg.${name}) values;
  checkService =
    cfg:
    oneOf "Type" [ "exec" "simple" "forking" "oneshot" "dbus" "notify" "notify-reload" "idle" ] cfg
    && oneOf "Restart" [ "no" "on-success" "on-failure" "on-abnormal" "on-abort" "on-watchdog" "always" ] cfg;

  serviceOptions =
    { name, ... }:
    {
      options = {
        enable = opt types.bool true;
        description = opt types.singleLineStr "";
        wantedBy = unitDeps;
        requiredBy = unitDeps;
        after = unitDeps;
        before = unitDeps;
        wants = unitDeps;
        requires = unitDeps;
        bindsTo = unitDeps;
        partOf = unitDeps;
        conflicts = unitDeps;
        upholds = unitDeps;
        path = opt (types.listOf (types.oneOf [ types.package types.str ])) [ ];
        environment = opt (types.attrsOf (types.nullOr (types.oneOf [ types.str types.path types.package ]))) { };
        script = opt types.lines "";
        preStart = opt types.lines "";
        postStart = opt types.lines "";
        preStop = opt types.lines "";
        postStop = opt types.lines "";
        # upstream: types.addCheck (attrsOf unitOption) checkService
        serviceConfig = opt (types.addCheck (types.attrsOf unitOption) checkService) { };
        unitConfig = opt (types.attrsOf unitOption) { };
        restartTriggers = opt (types.listOf types.unspecified) [ ];
        reloadTriggers = opt (types.listOf types.unspecified) [ ];
        restartIfChanged = opt types.bool true;
        stopIfChanged = opt types.bool true;
        # upstream: types.int with no default; the sentinel stands for "not set" so that
        # forcing every value does not trip over them, while null is refused as upstream
        startLimitIntervalSec = opt (types.either types.int (types.enum [ "<unset>" ])) "<unset>";
        startLimitBurst = opt (types.either types.int (types.enum [ "<unset>" ])) "<unset>";
        startAt = opt (types.either types.str (types.listOf types.str)) [ ];
      };
    };

  dependsOnNetworkOnline = s: lib.elem "network-online.target" (s.wants ++ s.requires ++ s.bindsTo ++ s.upholds);

  # stand-in of a generated upstream unit: what our modules' fragments merge into
  upstreamUnit = exe: {
    wantedBy = [ "multi-user.target" ];
    serviceConfig.ExecStart = exe;
  };

  portOpt = default: opt types.port default;
in
[
  {
    file = "nixos/modules/misc/assertions.nix";
    options = {
      assertions = opt (types.listOf types.unspecified) [ ];
      warnings = opt (types.listOf types.str) [ ];
    };
  }
  {
    file = "nixos/modules/system/activation/top-level.nix";
    options.system = {
      build = opt (types.lazyAttrsOf types.unspecified) { };
    };
    # stand-in of the system's derivation (nothing is built)
    config = { config, ... }: {
      system.build.toplevel = pkgs.writeText "nixos-system-${config.networking.hostName}" config.system.stateVersion;
    };
  }
  {
    file = "nixos/modules/misc/version.nix";
    options.system.stateVersion = req types.str;
  }
  {
    file = "nixos/modules/system/boot/systemd.nix";
    options.systemd = {
      package = opt types.package pkgs.systemd;
      services = opt (types.attrsOf (types.submodule serviceOptions)) { };
    };
    config =
      { config, ... }:
      {
        # upstream: ordering after network-online.target without wanting it is a warning
        warnings =
          lib.concatLists (
            lib.mapAttrsToList (
              name: s:
              lib.optional (lib.elem "network-online.target" s.after && !(dependsOnNetworkOnline s))
                "${name}.service is ordered after 'network-online.target' but doesn't depend on it"
              ++ lib.optional ((s.serviceConfig.Type or "") == "oneshot" && !(lib.elem (s.serviceConfig.Restart or "no") [ "no" "on-failure" "on-abnormal" "on-abort" ]))
                "Service '${name}.service' with 'Type=oneshot' can only have 'Restart=no', 'on-failure', 'on-abnormal' or 'on-abort'"
            ) config.systemd.services
          );
      };
  }
  {
    # timers: unit options (nixos/lib/systemd-unit-options.nix) plus timerConfig
    file = "nixos/modules/system/boot/systemd.nix";
    options.systemd.timers = opt (types.attrsOf (types.submodule {
      options = {
        enable = opt types.bool true;
        description = opt types.singleLineStr "";
        wantedBy = unitDeps;
        requiredBy = unitDeps;
        after = unitDeps;
        before = unitDeps;
        unitConfig = opt (types.attrsOf unitOption) { };
        timerConfig = req (types.attrsOf unitOption);
      };
    })) { };
    # upstream: a timer starts the service of its name unless timerConfig.Unit says otherwise
    config = { config, ... }: {
      assertions = lib.mapAttrsToList (name: t: {
        assertion = t.timerConfig ? Unit || config.systemd.services ? ${name};
        message = "systemd.timers.${name}: no ${name}.service to start";
      }) config.systemd.timers;
    };
  }
  {
    file = "nixos/modules/tasks/filesystems.nix";
    options.fileSystems =
      let
        isNonEmpty = s: builtins.match "[ \t\n]*" s == null;
        nonEmptyStr = types.addCheck types.str isNonEmpty;
        noTrailingSlash = types.addCheck types.str (s: isNonEmpty s && builtins.match ".+/" s == null);
      in
      opt (types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          enable = opt types.bool true;
          mountPoint = opt noTrailingSlash name;
          device = opt (types.nullOr nonEmptyStr) null;
          fsType = opt nonEmptyStr "auto";
          options = opt (types.nonEmptyListOf nonEmptyStr) [ "defaults" ];
          depends = opt (types.listOf noTrailingSlash) [ ];
          autoFormat = bool;
          autoResize = bool;
          noCheck = bool;
        };
      }))) { };
  }
  {
    file = "nixos/modules/system/boot/systemd/tmpfiles.nix";
    options.systemd.tmpfiles.rules = strList;
  }
  {
    file = "nixos/modules/system/boot/systemd/journald.nix";
    options.services.journald.settings = opt (types.submodule {
      freeformType = types.attrsOf (types.attrsOf unitOption);
    }) { };
  }
  {
    # services.journald.extraConfig was replaced by settings (mkRemovedOptionModule)
    file = "nixos/modules/rename.nix";
    module = lib.mkRemovedOptionModule [ "services" "journald" "extraConfig" ] "Use services.journald.settings.Journal instead.";
  }
  {
    file = "nixos/modules/system/etc/etc.nix";
    options.environment.etc = opt (types.attrsOf (types.submodule ({ name, config, ... }: {
      options = {
        enable = opt types.bool true;
        target = opt types.str name;
        text = opt (types.nullOr types.lines) null;
        source = req types.path;
        mode = opt types.str "symlink";
        user = opt types.str "+0";
        group = opt types.str "+0";
      };
      config.source = mkIf (config.text != null) (mkDefault (pkgs.writeText "etc-${baseNameOf name}" config.text));
    }))) { };
  }
  {
    file = "nixos/modules/config/system-path.nix";
    options.environment.systemPackages = opt (types.listOf types.package) [ ];
  }
  {
    file = "nixos/modules/config/sysctl.nix";
    options.boot.kernel.sysctl = opt (types.attrsOf (types.nullOr (types.oneOf [ types.bool types.str types.int ]))) { };
  }
  {
    file = "nixos/modules/tasks/network-interfaces.nix";
    options.networking = {
      hostName = opt (types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$") "nixos";
      useDHCP = opt types.bool true;
      interfaces = opt (types.attrsOf (types.submodule {
        options = lib.genAttrs [ "ipv4" "ipv6" ] (_: {
          addresses = opt (types.listOf (types.submodule {
            options = {
              address = req types.str;
              prefixLength = req (types.addCheck types.int (n: n >= 0 && n <= 128));
            };
          })) [ ];
        });
      })) { };
      defaultGateway6 = opt (types.nullOr (types.coercedTo types.str (address: { inherit address; }) (types.submodule {
        options = {
          address = req types.str;
          interface = opt (types.nullOr types.str) null;
          metric = opt (types.nullOr types.int) null;
        };
      }))) null;
    };
  }
  {
    file = "nixos/modules/services/networking/firewall.nix";
    options.networking.firewall =
      let
        ports = {
          allowedTCPPorts = opt (types.listOf types.port) [ ];
          allowedUDPPorts = opt (types.listOf types.port) [ ];
        };
      in
      ports
      // {
        enable = opt types.bool true;
        interfaces = opt (types.attrsOf (types.submodule { options = ports; })) { };
      };
  }
  {
    file = "nixos/modules/services/networking/firewall-nftables.nix";
    options.networking.firewall.extraInputRules = opt types.lines "";
  }
  {
    file = "nixos/modules/services/networking/nftables.nix";
    options.networking.nftables.enable = bool;
  }
  {
    file = "nixos/modules/services/networking/ssh/sshd.nix";
    options.services.openssh = {
      enable = bool;
      openFirewall = opt types.bool true;
      hostKeys = opt (types.listOf types.attrs) [ ];
      settings = opt (types.submodule {
        freeformType = types.attrsOf (types.nullOr (types.oneOf [ types.bool types.int types.str (types.listOf types.str) ]));
        options = {
          PasswordAuthentication = opt types.bool true;
          KbdInteractiveAuthentication = opt types.bool true;
          PermitRootLogin = opt (types.enum [ "yes" "without-password" "prohibit-password" "forced-commands-only" "no" ]) "prohibit-password";
          KexAlgorithms = opt (types.nullOr (types.listOf types.str)) null;
          Ciphers = opt (types.nullOr (types.listOf types.str)) null;
          Macs = opt (types.nullOr (types.listOf types.str)) null;
        };
      }) { };
    };
    options.users.users = opt (types.attrsOf (types.submodule {
      options.openssh.authorizedKeys.keys = opt (types.listOf types.singleLineStr) [ ];
    })) { };
    config = { config, ... }: { systemd.services.sshd = mkIf config.services.openssh.enable (upstreamUnit "${pkgs.openssh}/bin/sshd"); };
  }
  {
    file = "nixos/modules/config/nix.nix";
    options.nix.settings = opt (types.submodule {
      freeformType = types.attrsOf (types.oneOf [ types.bool types.int types.str types.path (types.listOf types.str) ]);
      options = {
        experimental-features = strList;
        trusted-users = strList;
        substituters = strList;
        trusted-public-keys = strList;
      };
    }) { };
  }
  {
    file = "nixos/modules/system/boot/loader/grub/grub.nix";
    options.boot.loader.grub = {
      enable = opt types.bool true;
      devices = strList;
    };
    config =
      { config, ... }:
      {
        assertions = [
          {
            assertion = !config.boot.loader.grub.enable || config.boot.loader.grub.devices != [ ];
            message = "You must set the option ‘boot.loader.grub.devices’ or 'boot.loader.grub.mirroredBoots' to make the system bootable.";
          }
        ];
      };
  }
  {
    file = "nixos/modules/system/boot/stage-1.nix";
    options.boot.initrd.availableKernelModules = strList;
    options.boot.initrd.kernelModules = strList;
  }
  {
    file = "nixos/modules/virtualisation/qemu-guest-agent.nix";
    options.services.qemuGuest.enable = bool;
  }
  {
    # disko's NixOS module (disko.nixosModules.disko): declares the layout and
    # gives GRUB the disks that carry a BIOS boot (EF02) partition
    file = "lib/types/disk.nix"; # disko's, not nixpkgs'
    options.disko.devices.disk = opt (types.attrsOf (types.submodule {
      options = {
        type = req (types.enum [ "disk" ]);
        device = req types.str;
        content = req (types.submodule {
          options = {
            type = req (types.enum [ "gpt" "table" "filesystem" ]);
            partitions = opt (types.attrsOf (types.submodule {
              options = {
                size = opt types.str "100%";
                type = opt types.str "8300";
                content = opt (types.nullOr types.attrs) null;
              };
            })) { };
          };
        });
      };
    })) { };
    config =
      { config, ... }:
      {
        boot.loader.grub.devices = mkDefault (
          lib.concatMap (d: lib.optional (lib.any (p: p.type == "EF02") (lib.attrValues d.content.partitions)) d.device) (
            lib.attrValues config.disko.devices.disk
          )
        );
      };
  }
  {
    file = "nixos/modules/services/databases/etcd.nix";
    options.services.etcd = {
      enable = bool;
      package = opt types.package pkgs.etcd;
      name = opt types.str "nixos";
      listenClientUrls = opt (types.listOf types.str) [ "http://127.0.0.1:2379" ];
      advertiseClientUrls = opt (types.listOf types.str) [ "http://127.0.0.1:2379" ];
      listenPeerUrls = opt (types.listOf types.str) [ "http://127.0.0.1:2380" ];
      initialAdvertisePeerUrls = opt (types.listOf types.str) [ "http://127.0.0.1:2380" ];
      initialCluster = opt (types.listOf types.str) [ ];
      initialClusterState = opt (types.enum [ "new" "existing" ]) "new";
      initialClusterToken = opt types.str "etcd-cluster";
      clientCertAuth = bool;
      peerClientCertAuth = bool;
      trustedCaFile = opt (types.nullOr types.path) null;
      certFile = opt (types.nullOr types.path) null;
      keyFile = opt (types.nullOr types.path) null;
      peerCertFile = opt (types.nullOr types.path) null;
      peerKeyFile = opt (types.nullOr types.path) null;
      peerTrustedCaFile = opt (types.nullOr types.path) null;
      openFirewall = bool;
      extraConf = opt (types.attrsOf types.str) { };
      dataDir = opt types.path "/var/lib/etcd";
    };
    config = { config, ... }: {
      systemd.services.etcd = mkIf config.services.etcd.enable (lib.recursiveUpdate (upstreamUnit "${pkgs.etcd}/bin/etcd") {
        serviceConfig = {
          Type = "notify";
          Restart = "always";
          RestartSec = "30s";
          User = "etcd";
          LimitNOFILE = 40000;
        };
      });
    };
  }
  {
    file = "nixos/modules/services/networking/flannel.nix";
    options.services.flannel = {
      enable = bool;
      package = opt types.package pkgs.flannel;
      publicIp = opt (types.nullOr types.str) null;
      iface = opt (types.nullOr types.str) null;
      etcd = {
        endpoints = opt (types.listOf types.str) [ "http://127.0.0.1:2379" ];
        prefix = opt types.str "/coreos.com/network";
        caFile = opt (types.nullOr types.path) null;
        certFile = opt (types.nullOr types.path) null;
        keyFile = opt (types.nullOr types.path) null;
      };
      network = req types.str;
      nodeName = opt (types.nullOr types.str) null;
      storageBackend = opt (types.enum [ "etcd" "kubernetes" ]) "etcd";
      subnetLen = opt types.int 24;
      backend = opt types.attrs { Type = "vxlan"; };
    };
    config = { config, ... }: {
      systemd.services.flannel =
        let
          cfg = config.services.flannel;
          networkConfig = lib.filterAttrs (_: v: v != null) { Network = cfg.network; SubnetLen = cfg.subnetLen; Backend = cfg.backend; };
        in
        mkIf cfg.enable (lib.recursiveUpdate (upstreamUnit "${pkgs.flannel}/bin/flannel") {
          after = [ "network.target" ];
          # upstream puts the network config with the node's etcd credentials before every start
          preStart = lib.optionalString (cfg.storageBackend == "etcd") ''
            echo "setting network configuration"
            until ${pkgs.etcd}/bin/etcdctl put /coreos.com/network/config '${builtins.toJSON networkConfig}'
            do
              echo "setting network configuration, retry"
              sleep 1
            done
          '';
          serviceConfig = { Restart = "always"; RestartSec = "10s"; RuntimeDirectory = "flannel"; };
        });
    };
  }
  {
    file = "nixos/modules/virtualisation/podman/default.nix";
    options.virtualisation.podman.enable = bool;
  }
  {
    file = "nixos/modules/virtualisation/oci-containers.nix";
    options.virtualisation.oci-containers = {
      backend = opt (types.enum [ "podman" "docker" ]) "podman";
      containers = opt (types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          image = req types.str;
          imageFile = opt (types.nullOr types.package) null;
          cmd = strList;
          entrypoint = opt (types.nullOr types.str) null;
          environment = opt (types.attrsOf types.str) { };
          environmentFiles = opt (types.listOf types.path) [ ];
          ports = strList;
          volumes = strList;
          extraOptions = strList;
          user = opt (types.nullOr types.str) null;
          dependsOn = strList;
          autoStart = opt types.bool true;
          serviceName = opt types.str "podman-${name}";
        };
      }))) { };
    };
    # upstream: one unit per container, `podman run ... <image> <cmd>` in its script
    # (the image string unescaped), Restart=always
    config = { config, ... }: {
      systemd.services = lib.mapAttrs' (name: c: lib.nameValuePair c.serviceName {
        wantedBy = lib.optional c.autoStart "multi-user.target";
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ];
        script = lib.concatStringsSep " \\\n  " (
          [ "exec podman run --name=${lib.escapeShellArg name} --cidfile=/run/${lib.escapeShellArg name}/ctr-id -d --replace --rm" ]
          ++ lib.mapAttrsToList (k: v: "-e ${lib.escapeShellArg "${k}=${v}"}") c.environment
          ++ map (v: "-v ${lib.escapeShellArg v}") c.volumes
          ++ lib.optional (c.user != null) "-u ${lib.escapeShellArg c.user}"
          ++ map lib.escapeShellArg c.extraOptions
          ++ [ c.image ]
          ++ map lib.escapeShellArg c.cmd
        );
        preStop = "podman stop --ignore --cidfile=/run/${lib.escapeShellArg name}/ctr-id";
        postStop = "podman rm -f --ignore --cidfile=/run/${lib.escapeShellArg name}/ctr-id";
        path = [ pkgs.podman ];
        serviceConfig = {
          ExecStartPre = [ "${pkgs.writeShellScript "pre-start" "podman rm -f ${name} || true"}" ];
          TimeoutStartSec = 0;
          TimeoutStopSec = 120;
          Restart = "always";
          Environment = "PODMAN_SYSTEMD_UNIT=%n";
          Type = "notify";
          NotifyAccess = "all";
          User = "root";
          # single values: a module that sets another one conflicts, as upstream
          RuntimeDirectory = lib.escapeShellArg name;
        };
      }) config.virtualisation.oci-containers.containers;
    };
  }
  {
    file = "nixos/modules/security/acme/default.nix";
    options.security.acme = {
      acceptTerms = bool;
      defaults.email = opt (types.nullOr types.str) null;
    };
  }
  {
    file = "nixos/modules/services/web-servers/nginx/default.nix";
    options.services.nginx = {
      enable = bool;
      recommendedProxySettings = bool;
      recommendedTlsSettings = bool;
      virtualHosts = opt (types.attrsOf (types.submodule {
        options = {
          enableACME = bool;
          forceSSL = bool;
          locations = opt (types.attrsOf (types.submodule {
            options = {
              proxyPass = opt (types.nullOr types.str) null;
              extraConfig = opt types.lines "";
            };
          })) { };
        };
      })) { };
    };
    config = { config, ... }: {
      systemd.services.nginx = mkIf config.services.nginx.enable (upstreamUnit "${pkgs.nginx}/bin/nginx");
    };
  }
  {
    file = "nixos/modules/services/misc/docker-registry.nix";
    options.services.dockerRegistry = {
      enable = bool;
      listenAddress = opt types.str "127.0.0.1";
      port = portOpt 5000;
      enableGarbageCollect = bool;
    };
    config = { config, ... }: {
      systemd.services.docker-registry = mkIf config.services.dockerRegistry.enable (
        {
          wantedBy = [ "multi-user.target" ];
          after = [ "network.target" ];
          script = "${pkgs.docker-distribution}/bin/registry serve /etc/docker/registry/config.yml";
          serviceConfig = { User = "docker-registry"; WorkingDirectory = "/var/lib/docker-registry"; };
        }
      );
    };
  }
  {
    file = "nixos/modules/services/networking/nix-serve.nix";
    options.services.nix-serve = {
      enable = bool;
      port = portOpt 5000;
      bindAddress = opt types.str "0.0.0.0";
      secretKeyFile = opt (types.nullOr types.str) null;
    };
    config = { config, ... }: {
      systemd.services.nix-serve = mkIf config.services.nix-serve.enable {
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        script = "exec ${pkgs.nix-serve}/bin/nix-serve --listen ${config.services.nix-serve.bindAddress}:${toString config.services.nix-serve.port}";
        serviceConfig = { Restart = "always"; RestartSec = "5s"; User = "nix-serve"; Group = "nix-serve"; DynamicUser = true; };
      };
    };
  }
  {
    file = "nixos/modules/services/databases/postgresql.nix";
    options.services.postgresql = {
      enable = bool;
      package = opt types.package pkgs.postgresql_17;
      enableTCPIP = bool;
      settings = opt (types.submodule {
        freeformType = types.attrsOf (types.oneOf [ types.bool types.float types.int types.str ]);
        options = {
          port = portOpt 5432;
          listen_addresses = opt types.str "localhost";
        };
      }) { };
      authentication = opt types.lines "";
      ensureDatabases = strList;
      ensureUsers = opt (types.listOf (types.submodule {
        options = {
          name = req types.str;
          ensureDBOwnership = bool;
        };
      })) [ ];
    };
    config =
      { config, ... }:
      let
        cfg = config.services.postgresql;
      in
      {
        assertions = map (u: {
          assertion = u.ensureDBOwnership -> lib.elem u.name cfg.ensureDatabases;
          message = "services.postgresql.ensureUsers: ${u.name} has ensureDBOwnership but no database of that name in ensureDatabases.";
        }) cfg.ensureUsers;
        systemd.services.postgresql = mkIf cfg.enable (lib.recursiveUpdate (upstreamUnit "${cfg.package}/bin/postgres") {
          after = [ "network.target" ];
          serviceConfig = {
            Type = "notify";
            User = "postgres";
            Group = "postgres";
            RuntimeDirectory = "postgresql";
            TimeoutSec = 120;
            Restart = "always";
          };
          startLimitIntervalSec = 605;
          startLimitBurst = 5;
        });
        # newer NixOS: ensureDatabases/ensureUsers run in a oneshot after postgresql.service
        systemd.services.postgresql-setup = mkIf cfg.enable {
          wantedBy = [ "postgresql.service" ];
          after = [ "postgresql.service" ];
          script = "true";
          serviceConfig = { Type = "oneshot"; RemainAfterExit = true; User = "postgres"; };
        };
      };
  }
  {
    file = "nixos/modules/services/databases/redis.nix";
    options.services.redis = {
      package = opt types.package pkgs.redis;
      servers = opt (types.attrsOf (types.submodule {
        options = {
          enable = bool;
          port = portOpt 6379;
          bind = opt (types.nullOr types.str) "127.0.0.1";
          requirePassFile = opt (types.nullOr types.path) null;
          appendOnly = bool;
        };
      })) { };
    };
    config = { config, ... }: {
      systemd.services = lib.mapAttrs' (name: s: lib.nameValuePair "redis-${name}" (
        lib.recursiveUpdate (upstreamUnit "${config.services.redis.package}/bin/redis-server /var/lib/redis-${name}/redis.conf") {
          after = [ "network.target" ];
          serviceConfig = {
            # reads requirePassFile as root into the config
            ExecStartPre = lib.optional (s.requirePassFile != null) "+${pkgs.writeShellScript "redis-${name}-credentials" "cat ${s.requirePassFile}"}";
            Type = "notify";
            User = "redis-${name}";
            Group = "redis-${name}";
            RuntimeDirectory = "redis-${name}";
            RuntimeDirectoryMode = "0750";
            StateDirectory = "redis-${name}";
            StateDirectoryMode = "0700";
          };
        }
      )) (lib.filterAttrs (_: s: s.enable) config.services.redis.servers);
    };
  }
]
