from nix_infra.cli import main

main()
