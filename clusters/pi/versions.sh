# Sourced by join.sh and setup.sh: reads the NAME=VALUE lines that print_versions.sh writes.

# Print the value of NAME from NAME=VALUE lines on standard input (the last one wins).
version_of() {
    local name="$1" line value=""
    while IFS= read -r line || [[ -n "$line" ]]; do
        line="${line%$'\r'}"
        if [[ "$line" == "$name="* ]]; then
            value="${line#"$name="}"
        fi
    done
    printf '%s' "$value"
}
