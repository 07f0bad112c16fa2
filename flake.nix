{
  description = "stream-layered-image: a fast drop-in for nixpkgs' dockerTools.streamLayeredImage";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      # Every system nixpkgs offers packages for (only x86_64-linux in the
      # offline stand-in used by the tests).
      systems = builtins.filter (s: nixpkgs.legacyPackages ? ${s}) [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      # The functions for a given package set (also what the overlay adds).
      toolsFor = pkgs: pkgs.callPackage ./nix { };
    in
    {
      # Other flakes: `stream-layered-image.lib.streamLayeredImage pkgs { ... }`,
      # or `(stream-layered-image.lib.forPkgs pkgs).buildLayeredImage { ... }`.
      lib = {
        forPkgs = toolsFor;
        streamLayeredImage = pkgs: (toolsFor pkgs).streamLayeredImage;
        buildLayeredImage = pkgs: (toolsFor pkgs).buildLayeredImage;
        buildLayeredImageWithNixDb = pkgs: (toolsFor pkgs).buildLayeredImageWithNixDb;
        streamMultiArchImage = pkgs: (toolsFor pkgs).streamMultiArchImage;
      };

      # pkgs.stream-layered-image (the executable) and
      # pkgs.streamLayeredImageTools.{streamLayeredImage,buildLayeredImage,...}.
      overlays.default = final: prev: {
        streamLayeredImageTools = toolsFor final;
        stream-layered-image = (toolsFor final).stream-layered-image;
      };

      packages = forAllSystems (
        pkgs:
        let
          tools = toolsFor pkgs;
        in
        {
          default = tools.stream-layered-image;
          stream-layered-image = tools.stream-layered-image;
          example = import ./examples/hello.nix { inherit pkgs; };
        }
        # The example for amd64 and arm64 under one tag, where nixpkgs has
        # both package sets (not the offline stand-in, which has one).
        // lib.optionalAttrs (builtins.length systems == 2) {
          example-multi = import ./examples/hello-multi.nix {
            inherit pkgs;
            pkgsFor = system: nixpkgs.legacyPackages.${system};
          };
        }
      );

      # The end-to-end test images (tests/nix/images.nix), built together.
      checks = forAllSystems (pkgs: import ./tests/nix/images.nix { inherit pkgs; });
    };
}
