# Writes closureInfo's outputs (registration, store-paths, total-nar-size)
# into the directory `out` from the `closure` list that Nix's structured
# exportReferencesGraph puts in .attrs.json. Nix writes that JSON compactly
# with sorted keys; store paths and hashes hold no quotes or braces, so
# each closure entry is the text between `{` and `}` of the list.
function field(obj, key,    s) {
    if (!match(obj, "\"" key "\":(\"[^\"]*\"|[0-9]+)")) return ""
    s = substr(obj, RSTART + length(key) + 3, RLENGTH - length(key) - 3)
    gsub(/"/, "", s)
    return s
}
{ json = json $0 }
END {
    start = index(json, "\"closure\":[")
    reg = out "/registration"; paths = out "/store-paths"; total = 0
    printf "" > reg; printf "" > paths
    if (start == 0) { print 0 > (out "/total-nar-size"); exit }
    rest = substr(json, start + 11)
    while (substr(rest, 1, 1) == "{") {
        end = index(rest, "}")
        obj = substr(rest, 2, end - 2)
        rest = substr(rest, end + 1)
        sub(/^,/, "", rest)
        path = field(obj, "path")
        refs = obj
        sub(/.*"references":\[/, "", refs)
        sub(/\].*/, "", refs)
        gsub(/"/, "", refs)
        n = (refs == "") ? 0 : split(refs, r, ",")
        printf "%s\n%s\n%s\n\n%d\n", path, field(obj, "narHash"), field(obj, "narSize"), n >> reg
        for (i = 1; i <= n; i++) print r[i] >> reg
        print path >> paths
        total += field(obj, "narSize")
    }
    printf "%d\n", total > (out "/total-nar-size")
}
