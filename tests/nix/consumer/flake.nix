# A user's flake that takes stream-layered-image as an input, the way the
# README shows. The e2e test builds it with both inputs overridden
# (nixpkgs -> the stand-in, stream-layered-image -> this checkout).
{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
  inputs.stream-layered-image.url = "github:example/stream-layered-image";
  inputs.stream-layered-image.inputs.nixpkgs.follows = "nixpkgs";

  outputs =
    { nixpkgs, stream-layered-image, ... }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      withOverlay = import nixpkgs {
        inherit system;
        overlays = [ stream-layered-image.overlays.default ];
      };
    in
    {
      # Through the flake's lib, with the user's own pkgs.
      packages.${system} = {
        default = stream-layered-image.lib.streamLayeredImage pkgs {
          name = "sli-e2e-consumer";
          tag = "lib";
          contents = [ pkgs.hello ];
          config.Cmd = [ "/bin/hello" ];
        };
        # Through the overlay.
        overlay = withOverlay.streamLayeredImageTools.streamLayeredImage {
          name = "sli-e2e-consumer";
          tag = "overlay";
          contents = [ withOverlay.hello ];
          config.Cmd = [ "/bin/hello" ];
        };
      };
    };
}
