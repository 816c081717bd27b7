from nix_infra.entry import main

main()
