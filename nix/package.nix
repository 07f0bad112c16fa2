# The stream-layered-image executable, built by cargo from Cargo.lock.
{ lib, rustPlatform }:

let
  # Only what cargo needs, so that editing nix/, tests/nix or the README
  # does not rebuild the executable.
  root = ./..;
  keep = [ "Cargo.toml" "Cargo.lock" "src" "benches" "build.rs" ];
  src = builtins.path {
    name = "stream-layered-image-source";
    path = root;
    filter =
      path: _type:
      let
        rel = lib.removePrefix (toString root + "/") (toString path);
        top = builtins.head (lib.splitString "/" rel);
      in
      builtins.elem top keep;
  };
in
rustPlatform.buildRustPackage {
  pname = "stream-layered-image";
  version = (builtins.fromTOML (builtins.readFile ../Cargo.toml)).package.version;
  inherit src;
  cargoLock.lockFile = ../Cargo.lock;
  # The test suite needs python3, docker and a writable /tmp fixture; it
  # runs in CI (cargo test), not in the sandbox.
  doCheck = false;
  meta = {
    description = "Streams Nix store closures as container images; a drop-in for dockerTools.streamLayeredImage";
    license = lib.licenses.mit or "MIT";
    mainProgram = "stream-layered-image";
  };
}
