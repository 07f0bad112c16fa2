# Prints the `out` output path from a structured-attrs .attrs.json.
{
    if (match($0, /"outputs":\{"out":"[^"]*"/)) {
        s = substr($0, RSTART, RLENGTH)
        sub(/^"outputs":\{"out":"/, "", s)
        sub(/"$/, "", s)
        print s
        exit
    }
}
