# The example image for two platforms under one tag (an OCI image index):
#   nix build .#example-multi && ./result --push registry.example/hello:latest
#   ./result --oci-dir ./layout && skopeo inspect --raw oci:./layout:latest
# `pkgsFor SYSTEM` is the package set of each platform. Each image (its
# closure and its own small derivations) is built by that system: a remote
# builder or binfmt emulation for the one this machine is not (see
# nix/README.md, "Building the other systems' closures").
{
  pkgsFor,
  pkgs ? pkgsFor "x86_64-linux",
  systems ? [
    "x86_64-linux"
    "aarch64-linux"
  ],
}:

(pkgs.callPackage ../nix { }).streamMultiArchImage {
  name = "hello";
  tag = "latest";
  images = map (system: {
    inherit system;
    image = import ./hello.nix { pkgs = pkgsFor system; };
  }) systems;
}
