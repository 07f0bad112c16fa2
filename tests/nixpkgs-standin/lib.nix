# The part of nixpkgs' `lib` that this project's Nix files and tests use,
# with nixpkgs' names and semantics (see nixpkgs lib/{lists,strings,
# attrsets,trivial,customisation,meta}.nix). Nothing here is specific to the
# stand-in: a function missing from this file is one our nix/ files must
# not call, and a call that works here works with real nixpkgs.
let
  inherit (builtins)
    concatStringsSep
    elem
    elemAt
    filter
    foldl'
    genList
    head
    isAttrs
    isFunction
    isList
    length
    listToAttrs
    map
    stringLength
    substring
    ;

  id = x: x;
  optionals = cond: xs: if cond then xs else [ ];
  optional = cond: x: if cond then [ x ] else [ ];
  optionalString = cond: s: if cond then s else "";
  optionalAttrs = cond: as: if cond then as else { };
  concatMapStrings = f: xs: concatStringsSep "" (map f xs);
  toList = x: if isList x then x else [ x ];
  hasPrefix = pre: s: substring 0 (stringLength pre) s == pre;
  hasSuffix =
    suf: s:
    let
      ls = stringLength s;
      lf = stringLength suf;
    in
    lf <= ls && substring (ls - lf) lf s == suf;
  removeSuffix =
    suf: s:
    if hasSuffix suf s then substring 0 (stringLength s - stringLength suf) s else s;
  removePrefix =
    pre: s:
    if hasPrefix pre s then substring (stringLength pre) (stringLength s - stringLength pre) s else s;
  lowerChars = [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  upperChars = [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ];
  toLower = builtins.replaceStrings upperChars lowerChars;
  splitString =
    sep: s: map (x: if isList x then "" else x) (builtins.split (escapeRegex sep) s);
  escapeRegex = builtins.replaceStrings
    [ "\\" "[" "{" "(" ")" "^" "$" "?" "*" "+" "|" "." ]
    [ "\\\\" "\\[" "\\{" "\\(" "\\)" "\\^" "\\$" "\\?" "\\*" "\\+" "\\|" "\\." ];
  escapeShellArg = arg: "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString arg)}'";
  escapeShellArgs = xs: concatStringsSep " " (map escapeShellArg xs);
  genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);
  mapAttrs = builtins.mapAttrs;
  attrValues = builtins.attrValues;
  concatMap = builtins.concatMap;
  isDerivation = value: value.type or null == "derivation";
  last = xs: elemAt xs (length xs - 1);
  assertMsg = pred: msg: pred || builtins.throw msg;
  warnIf = cond: msg: if cond then builtins.trace "evaluation warning: ${msg}" else id;
  throwIf = cond: msg: if cond then builtins.throw msg else id;
  boolToString = b: if b then "true" else "false";
  makeBinPath = xs: concatStringsSep ":" (map (p: "${p}/bin") xs);
  # nixpkgs' getOutput "bin": the `bin` output if there is one, else `out`.
  getBin = pkg: pkg.bin or pkg.out or pkg;
  getExe' = pkg: exe: "${getBin pkg}/bin/${exe}";
  getExe =
    pkg:
    getExe' pkg (
      pkg.meta.mainProgram or (builtins.throw "lib.getExe: ${pkg.name or "package"} has no meta.mainProgram")
    );
  # nixpkgs' makeOverridable: the result gains `override`, which calls the
  # function again with the arguments updated.
  makeOverridable =
    f: args:
    let
      result = f args;
      override = newArgs: makeOverridable f (args // (if isFunction newArgs then newArgs args else newArgs));
    in
    if isAttrs result then
      result // { inherit override; }
    else if isFunction result then
      { inherit override; __functor = _: result; }
    else
      result;
  fix = f: let x = f x; in x;
  systems.flakeExposed = [ "x86_64-linux" ];
in
{
  inherit
    id optionals optional optionalString optionalAttrs concatMapStrings toList hasPrefix hasSuffix
    removeSuffix removePrefix toLower escapeShellArg escapeShellArgs genAttrs mapAttrs attrValues last
    assertMsg warnIf throwIf boolToString makeBinPath getBin getExe getExe' makeOverridable fix systems
    concatMap isDerivation
    concatStringsSep head filter foldl' genList length elem
    ;
  strings = { inherit splitString hasPrefix hasSuffix removeSuffix removePrefix toLower; };
  lists = { inherit optionals optional toList last; };
  trivial = { inherit id boolToString; };
  inherit splitString;
}
