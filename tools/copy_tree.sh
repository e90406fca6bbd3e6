# Sourced by tools/sanitize.sh and tools/valgrind_fit.sh; not run on its own.
#
# copy_tree SRC DEST: copy the working tree of SRC (tracked files plus untracked,
# non-ignored ones, as they are on disk now, uncommitted edits included) into DEST.
# Ignored files are left behind: build/, *.so and the Cython-generated
# fastfit/_core.c and fastfit/_cpu.c, so DEST always builds from the sources.
copy_tree() {
    local src=$1 dest=$2
    mkdir -p "$dest"
    (cd "$src" && git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done \
        | tar -c --null -T - -f -) | tar -x -C "$dest"
}
