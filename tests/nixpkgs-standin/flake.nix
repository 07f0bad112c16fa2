{
  description = "Offline stand-in for the part of nixpkgs that stream-layered-image uses (tests only)";

  outputs =
    { self }:
    let
      pkgs = import ./. { system = "x86_64-linux"; };
    in
    {
      lib = pkgs.lib;
      legacyPackages.x86_64-linux = pkgs;
    };
}
