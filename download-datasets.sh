#!/usr/bin/env bash
# Fetch the datasets difflab can use, verify them, and unpack them into data/.
#
#   bash download-datasets.sh [--force|--if-missing] [mnist] [cifar10] [fsdd] [all]
#                                                                    (default: all)
#
# Where the files land (what difflab.data.images reads):
#   data/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte   uncompressed IDX
#   data/cifar-10-batches-py/                                     official archive
#   data/CIFAR10/{train,test}/<class>/*.png                       PNG subset (mirror)
#   data/free-spoken-digit-dataset/recordings/*.wav               FSDD v1.0.10
#
# Sources, in order of precedence:
#   DATASETS_MIRROR=DIR    copy the files from a local folder laid out as
#                          MNIST/raw/<name>.gz, cifar-10-python.tar.gz (or
#                          cifar-10-subset-png.zip), free-spoken-digit-dataset.zip
#   DATASETS_BASE_URL=URL  fetch that same layout over HTTP (e.g. a local server)
#   otherwise              the official hosts (MNIST: Yann LeCun's page, then the
#                          PyTorch S3 mirror; CIFAR-10: the University of Toronto;
#                          FSDD: the v1.0.10 tag archive on GitHub)
# DIFFLAB_DATA=DIR puts the data somewhere else than data/ beside this script.
# DATASETS_DOWNLOADER=wget|curl picks the download tool (default: wget if found).
# --force fetches and unpacks the named datasets again even if they verify.
# --if-missing fetches only the datasets of which no form that difflab reads is
# present and verified (the CIFAR-10 PNG subset counts, with or without a mirror):
# what `make serve` and `make build` run before building.
#
# Guarantees: a second run downloads nothing; an interrupted download resumes
# (wget -c / curl -C -); files are fetched to *.part, verified, then renamed, and
# archives are unpacked into a temporary folder that is renamed when complete, so
# a half-written file is never taken as done; a file that fails its check is
# reported by name, removed, and the others are kept; the exit status is non-zero
# if anything failed. Ctrl-C (SIGINT) or SIGTERM stops the whole run at once: the
# temporary folder is removed and an archive that passed its check is kept in
# data/.downloads/ for the next run. Two runs on one data folder take turns (a
# lock on data/.download-datasets.lock); each run first removes what a killed run
# left behind.
#
# Checks: MNIST by the md5 of the *uncompressed* IDX files (so re-gzipped copies
# pass); the CIFAR-10 archive by its published md5 and the unpacked batches by
# theirs (torchvision's list); the CIFAR-10 PNG subset by the md5 of the
# project's zip; FSDD by the zip's CRCs and the count of WAV files (3000). GitHub
# builds tag archives on the fly and publishes no checksum for them, so FSDD has
# no archive md5; the md5 of the per-file md5 list of the recordings the project
# was tested with is compared, and a mismatch only warns.
#
# What is unpacked is checked on every run, not only at unpack time: the PNG
# subset and the recordings get a list of per-file md5s (.manifest.md5 in their
# folder) once they are unpacked, and a later run that finds a file changed or
# missing (or, without that list, a set of files whose list md5 is not the known
# one) says which and fetches the dataset again. So the command a loader's error
# message names ("bash download-datasets.sh cifar10") repairs a corrupt file.

set -uo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="${DIFFLAB_DATA:-$SCRIPT_DIR/data}"
DL="$DATA/.downloads"
MIRROR="${DATASETS_MIRROR:-}"
BASE_URL="${DATASETS_BASE_URL:-}"
DOWNLOADER="${DATASETS_DOWNLOADER:-}"
if [ -z "$DOWNLOADER" ]; then
    command -v wget >/dev/null 2>&1 && DOWNLOADER=wget || DOWNLOADER=curl
fi

MNIST_HOSTS=(
    "http://yann.lecun.com/exdb/mnist"
    "https://ossci-datasets.s3.amazonaws.com/mnist"
)
# name, md5 of the uncompressed file
MNIST_FILES=(
    "train-images-idx3-ubyte 6bbc9ace898e44ae57da46a324031adb"
    "train-labels-idx1-ubyte a25bea736e30d166cdddb491f175f624"
    "t10k-images-idx3-ubyte 2646ac647ad5339dbf082846283269ea"
    "t10k-labels-idx1-ubyte 27ae3e4e09519cfbb04c329615203637"
)
CIFAR_URL="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5="c58f30108f718f92721af3b95e74349a"
CIFAR_SUBSET_MD5="68eb07cc5dc5ad4e9437c5c06bf672be"
# name, md5 of the unpacked file (the sums torchvision's CIFAR10 checks)
CIFAR_FILES=(
    "data_batch_1 c99cafc152244af753f735de768cd75f"
    "data_batch_2 d4bba439e000b95fd0a9bffe97cbabec"
    "data_batch_3 54ebc095f3ab1f0389bbae665268c751"
    "data_batch_4 634d18415352ddfa80567beed471001a"
    "data_batch_5 482c414d41f54cd18b22e5b47cb7c3cb"
    "test_batch 40351d587109b95175f43aff81a1287e"
    "batches.meta 5ff9c542aee3614f3951f8cda6e48888"
)
# md5 of the per-file md5 list (see md5_list) of the PNG subset's 6,000 images
CIFAR_SUBSET_LIST_MD5="d3d39766877a528e78f252bc2425faad"
CIFAR_CLASSES=(airplane automobile bird cat deer dog frog horse ship truck)
FSDD_URL="https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.zip"
FSDD_COUNT=3000
FSDD_MANIFEST_MD5="bdbabe32fa657162edfdcdbd292aecd5"

FAILED=()
FETCHED=0
FORCE=0
IF_MISSING=0
TMP_NOW=() # this run's temporary files and folders, removed if it is stopped

log() { printf '%s\n' "$*"; }
fail() {
    printf 'error: %s\n' "$*" >&2
    FAILED+=("$1")
}

usage() {
    sed -n '2,5p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    log "Environment: DATASETS_MIRROR=DIR, DATASETS_BASE_URL=URL, DIFFLAB_DATA=DIR"
}

md5_of() { # md5 of a file, or of stdin when no argument
    if command -v md5sum >/dev/null 2>&1; then
        md5sum "$@" | cut -d' ' -f1
    else
        md5 -q "$@"
    fi
}

md5_list() { # folder, find tests: "md5  path" per matching file, sorted by path
    local dir=$1
    shift
    (
        cd "$dir" || exit 1
        if command -v md5sum >/dev/null 2>&1; then
            find . -type f "$@" -print0 | LC_ALL=C sort -z | xargs -0 -r md5sum
        else
            find . -type f "$@" -print0 | LC_ALL=C sort -z | xargs -0 md5 -r \
                | sed 's/ /  /'
        fi
    ) | sed 's|  \./|  |'
}

# verify_tree DIR KNOWN FIND-TESTS...: the files of DIR matched by FIND-TESTS are
# those listed in DIR/.manifest.md5 (written when they were unpacked), or, with
# no list, their md5 list has the md5 KNOWN. Sets CHECK_MSG on failure.
verify_tree() {
    local dir=$1 known=$2 now bad n
    shift 2
    now=$(md5_list "$dir" "$@")
    if [ -f "$dir/.manifest.md5" ]; then
        [ "$now" = "$(cat "$dir/.manifest.md5")" ] && return 0
        bad=$(LC_ALL=C diff <(cat "$dir/.manifest.md5") <(printf '%s\n' "$now") \
            | sed -n 's/^[<>] [0-9a-f]*  //p' | LC_ALL=C sort -u)
        n=$(printf '%s\n' "$bad" | grep -c .)
        CHECK_MSG="$n file(s) changed, missing or added since they were unpacked:"
        CHECK_MSG+=" $(printf '%s\n' "$bad" | head -n 3 | tr '\n' ' ')"
        [ "$n" -gt 3 ] && CHECK_MSG+="..."
        return 1
    fi
    [ "$(printf '%s\n' "$now" | md5_of)" = "$known" ] && return 0
    CHECK_MSG="the files differ from the known copy and no .manifest.md5 lists them"
    return 1
}

write_manifest() { # folder, find tests: record what was just unpacked and verified
    local dir=$1
    shift
    md5_list "$dir" "$@" >"$dir/.manifest.md5"
}

# Folders swapped in by install_dir, and what a killed run may have left of them.
INSTALLED=(cifar-10-batches-py CIFAR10 free-spoken-digit-dataset)

clean_leftovers() { # needs the lock: what a stopped or killed run left behind
    local f name found=()
    for f in "$DATA"/.unpack-* "$DATA"/MNIST/raw/*-ubyte.part \
        "$DATA"/MNIST/raw/*-ubyte.*.part; do
        [ -e "$f" ] || continue
        rm -rf "$f" && found+=("${f#"$DATA"/}")
    done
    for name in "${INSTALLED[@]}"; do
        for f in "$DATA/$name".old.*; do
            [ -e "$f" ] || continue
            # Killed between install_dir's two renames: the old copy is the good one.
            if [ -e "$DATA/$name" ]; then rm -rf "$f"; else mv "$f" "$DATA/$name"; fi
            found+=("${f#"$DATA"/}")
        done
    done
    [ ${#found[@]} -eq 0 ] || log "cleaned up after an interrupted run: ${found[*]}"
}

LOCK_DIR=""
LOCKED=0
lock_data() { # wait for any other run on this data folder, then hold the lock
    if command -v flock >/dev/null 2>&1; then
        exec 9>>"$DATA/.download-datasets.lock" || return 1
        if ! flock -n 9; then
            log "waiting for another download-datasets.sh run on $DATA to finish"
            flock 9
        fi
        LOCKED=1
        return 0
    fi
    local pid said=0 # no flock(1) (macOS): a lock folder holding the owner's pid
    until mkdir "$DATA/.download-datasets.lock.d" 2>/dev/null; do
        pid=$(cat "$DATA/.download-datasets.lock.d/pid" 2>/dev/null)
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            rm -rf "$DATA/.download-datasets.lock.d" # its owner was killed
            continue
        fi
        [ $said -eq 1 ] || log "waiting for another download-datasets.sh run on $DATA"
        said=1
        sleep 1
    done
    LOCK_DIR="$DATA/.download-datasets.lock.d"
    echo $$ >"$LOCK_DIR/pid"
    LOCKED=1
}

unlock_data() { [ -z "$LOCK_DIR" ] || rm -rf "$LOCK_DIR"; }

# step CMD...: a long step (a download, an unpack) run in the background and
# waited for. A signal then runs on_signal at once, whether it reached the whole
# process group (Ctrl-C in a terminal) or this script alone (kill, a scheduler),
# and a tool that catches Ctrl-C and exits with a status of its own (Info-ZIP's
# unzip: 80) is never taken for a failed unpack ("disk full?").
STEP_PID=""
step() {
    "$@" &
    STEP_PID=$!
    wait "$STEP_PID"
    local rc=$?
    STEP_PID=""
    return $rc
}

kill_tree() { # pid: the process and everything it started, deepest first
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$child"; done
    kill -TERM "$1" 2>/dev/null
}

on_signal() { # SIGINT or SIGTERM: stop everything, keep what was verified
    trap - INT TERM
    if [ -n "$STEP_PID" ]; then # the step running now: stop it before cleaning up
        kill_tree "$STEP_PID"
        wait "$STEP_PID" 2>/dev/null
    fi
    [ ${#TMP_NOW[@]} -eq 0 ] || rm -rf "${TMP_NOW[@]}"
    if [ $LOCKED -eq 1 ]; then # else another run owns what is in $DATA
        clean_leftovers >/dev/null
        unlock_data
    fi
    echo "stopped by SIG$1: nothing half-done was kept; verified downloads stay in" \
        "$DL for the next run" >&2
    kill -s "$1" $$ # die of the signal, so the caller sees it
}

unzip_to() { # zip, folder; fails on a bad CRC
    if command -v unzip >/dev/null 2>&1; then
        unzip -q -o "$1" -d "$2"
    elif command -v python3 >/dev/null 2>&1; then
        python3 -m zipfile -e "$1" "$2"
    else
        echo "neither unzip nor python3 is installed" >&2
        return 1
    fi
}

download_url() { # url, part file; resumes a partial part file
    local url=$1 part=$2 rc
    local tty=()
    if [ "$DOWNLOADER" = wget ] && command -v wget >/dev/null 2>&1; then
        [ -t 2 ] && tty=(--show-progress)
        step wget -q "${tty[@]}" -c --tries=3 --timeout=30 -O "$part" "$url"
        rc=$?
        # 4 is a network failure: keep the partial file so the next run resumes.
        if [ $rc -ne 0 ] && [ $rc -ne 4 ] && [ -s "$part" ]; then
            rm -f "$part" # the server refused to resume: start again
            step wget -q "${tty[@]}" --tries=3 --timeout=30 -O "$part" "$url"
            rc=$?
        fi
    elif [ "$DOWNLOADER" = curl ] && command -v curl >/dev/null 2>&1; then
        [ -t 2 ] && tty=(-#) || tty=(-s)
        step curl -fL "${tty[@]}" --retry 2 --connect-timeout 30 -C - -o "$part" "$url"
        rc=$?
        # 6, 7, 18, 28, 56: network trouble; keep the partial file to resume later.
        if [ $rc -ne 0 ] && [[ " 6 7 18 28 56 " != *" $rc "* ]] && [ -s "$part" ]; then
            rm -f "$part"
            step curl -fL "${tty[@]}" --retry 2 --connect-timeout 30 -o "$part" "$url"
            rc=$?
        fi
    else
        echo "$DOWNLOADER is not installed (install wget or curl)" >&2
        return 1
    fi
    [ -s "$part" ] || rm -f "$part"
    return $rc
}

# get_verified REL PART CHECK URL...: put a verified copy of REL at PART.
# REL is the path in the mirror layout; the URLs are the official sources.
# CHECK is a function that takes the file and sets CHECK_MSG on failure.
# Sets SOURCE to where the file came from (for messages). Returns 1 on failure.
get_verified() {
    local rel=$1 part=$2 check=$3
    shift 3
    local urls=("$@") url resumed
    SOURCE="" CHECK_MSG=""
    mkdir -p "$(dirname "$part")"
    # A stopped run keeps an archive that passed its check: use it again.
    if [ -s "$part" ] && "$check" "$part"; then
        SOURCE="$part (kept from an earlier run)"
        FETCHED=$((FETCHED + 1))
        return 0
    fi
    CHECK_MSG=""
    if [ -n "$MIRROR" ]; then
        SOURCE="$MIRROR/$rel"
        if [ ! -f "$SOURCE" ]; then
            CHECK_MSG="no such file in the mirror folder"
            return 1
        fi
        cp "$SOURCE" "$part" && FETCHED=$((FETCHED + 1)) && "$check" "$part" && return 0
        rm -f "$part"
        return 1
    fi
    [ -n "$BASE_URL" ] && urls=("${BASE_URL%/}/$rel")
    for url in "${urls[@]}"; do
        SOURCE=$url
        for attempt in resume fresh; do
            resumed=0
            [ -s "$part" ] && resumed=1
            if ! download_url "$url" "$part"; then
                CHECK_MSG="could not download $url"
                break # next source
            fi
            FETCHED=$((FETCHED + 1))
            "$check" "$part" && return 0
            rm -f "$part" # never resume onto a bad file
            [ $resumed -eq 1 ] && [ $attempt = resume ] || break
        done
    done
    return 1
}

# ----------------------------------------------------------------------------- MNIST

check_gz_md5() { # $1 = .gz part; uses MNIST_NAME, MNIST_MD5, MNIST_OUT
    local actual
    actual=$(gunzip -c "$1" 2>/dev/null | md5_of)
    if [ "$actual" != "$MNIST_MD5" ]; then
        CHECK_MSG="uncompressed md5 is $actual, expected $MNIST_MD5 (corrupt or truncated)"
        return 1
    fi
}

mnist_one() {
    MNIST_NAME=$1 MNIST_MD5=$2
    local out="$DATA/MNIST/raw/$1" part="$DL/$1.gz.part" urls=() host
    if [ $FORCE -eq 0 ] && [ -f "$out" ] && [ "$(md5_of "$out")" = "$MNIST_MD5" ]; then
        log "  $MNIST_NAME: already present, md5 ok"
        return 0
    fi
    mkdir -p "$DATA/MNIST/raw"
    # A mirror may hold the uncompressed file (another checkout's data/, say).
    if [ -n "$MIRROR" ] && [ ! -f "$MIRROR/MNIST/raw/$1.gz" ] \
        && [ -f "$MIRROR/MNIST/raw/$1" ]; then
        TMP_NOW=("$out.part")
        cp "$MIRROR/MNIST/raw/$1" "$out.part"
        FETCHED=$((FETCHED + 1))
        if [ "$(md5_of "$out.part")" = "$MNIST_MD5" ]; then
            mv -f "$out.part" "$out" && log "  $MNIST_NAME: copied, md5 ok"
            return 0
        fi
        rm -f "$out.part"
        fail "MNIST $1: $MIRROR/MNIST/raw/$1 has the wrong md5; replace it in the mirror"
        return 1
    fi
    for host in "${MNIST_HOSTS[@]}"; do urls+=("$host/$1.gz"); done
    if ! get_verified "MNIST/raw/$1.gz" "$part" check_gz_md5 "${urls[@]}"; then
        fail "MNIST $1.gz from $SOURCE: $CHECK_MSG; the bad copy was removed," \
            "re-run 'bash download-datasets.sh mnist' (or fix the mirror)"
        return 1
    fi
    TMP_NOW=("$out.part")
    if ! { step gunzip -c "$part" >"$out.part" && mv -f "$out.part" "$out"; }; then
        rm -f "$out.part"
        fail "MNIST $1: md5 ok but unpacking failed (disk full?); the download is" \
            "kept in $DL: re-run 'bash download-datasets.sh mnist'"
        return 1
    fi
    rm -f "$part"
    log "  $MNIST_NAME: fetched from $SOURCE, md5 ok"
}

do_mnist() {
    log "mnist -> $DATA/MNIST/raw"
    local entry
    for entry in "${MNIST_FILES[@]}"; do
        # shellcheck disable=SC2086
        mnist_one $entry
    done
}

# -------------------------------------------------------------------------- CIFAR-10

cifar_official_ok() { # the unpacked batches have their published md5s
    local entry name sum
    for entry in "${CIFAR_FILES[@]}"; do
        read -r name sum <<<"$entry"
        [ -f "$DATA/cifar-10-batches-py/$name" ] || return 1
        if [ "$(md5_of "$DATA/cifar-10-batches-py/$name")" != "$sum" ]; then
            CHECK_MSG="cifar-10-batches-py/$name has the wrong md5"
            return 1
        fi
    done
}

cifar_png_ok() { verify_tree "$DATA/CIFAR10" "$CIFAR_SUBSET_LIST_MD5" -name '*.png'; }

check_cifar_tar() {
    local actual
    actual=$(md5_of "$1")
    if [ "$actual" != "$CIFAR_MD5" ]; then
        CHECK_MSG="md5 is $actual, expected $CIFAR_MD5 (corrupt or truncated)"
        return 1
    fi
}

check_cifar_zip() {
    local actual
    actual=$(md5_of "$1")
    if [ "$actual" != "$CIFAR_SUBSET_MD5" ]; then
        CHECK_MSG="md5 is $actual, expected $CIFAR_SUBSET_MD5 (corrupt or truncated)"
        return 1
    fi
}

install_dir() { # built folder, final folder: swap in atomically, keep nothing half-done
    local new=$1 final=$2 old=""
    if [ -e "$final" ]; then
        old="$final.old.$$"
        mv "$final" "$old"
    fi
    if mv "$new" "$final"; then
        [ -n "$old" ] && rm -rf "$old"
        return 0
    fi
    [ -n "$old" ] && mv "$old" "$final"
    return 1
}

# new_unpack_dir NAME: a temporary folder in $DATA, removed if the run is stopped.
new_unpack_dir() {
    UNPACK=$(mktemp -d "$DATA/.unpack-$1.XXXXXX") || return 1
    TMP_NOW=("$UNPACK")
}

do_cifar10() {
    log "cifar10 -> $DATA"
    CHECK_MSG=""
    if [ $FORCE -eq 0 ] && [ -d "$DATA/cifar-10-batches-py" ]; then
        if cifar_official_ok; then
            log "  cifar-10-batches-py: already present, md5 ok"
            return 0
        fi
        log "  cifar-10-batches-py: ${CHECK_MSG:-incomplete}; fetching it again"
    elif [ $FORCE -eq 0 ] && [ -d "$DATA/CIFAR10" ] \
        && { [ -n "$MIRROR" ] || [ -n "$BASE_URL" ] || [ $IF_MISSING -eq 1 ]; }; then
        if cifar_png_ok; then
            log "  CIFAR10 (PNG subset): already present, md5 ok"
            return 0
        fi
        log "  CIFAR10 (PNG subset): $CHECK_MSG; fetching it again"
    fi
    local c
    mkdir -p "$DATA"
    local use_zip=0
    [ -n "$MIRROR" ] && [ ! -f "$MIRROR/cifar-10-python.tar.gz" ] \
        && [ -f "$MIRROR/cifar-10-subset-png.zip" ] && use_zip=1
    if [ $use_zip -eq 0 ]; then
        if get_verified cifar-10-python.tar.gz "$DL/cifar-10-python.tar.gz.part" \
            check_cifar_tar "$CIFAR_URL"; then
            if new_unpack_dir cifar10 \
                && step tar -xzf "$DL/cifar-10-python.tar.gz.part" -C "$UNPACK" \
                && install_dir "$UNPACK/cifar-10-batches-py" "$DATA/cifar-10-batches-py" \
                && cifar_official_ok; then
                rm -rf "$UNPACK" "$DL/cifar-10-python.tar.gz.part"
                log "  cifar-10-batches-py: fetched from $SOURCE, md5 ok"
                return 0
            fi
            rm -rf "$UNPACK"
            fail "CIFAR-10 $SOURCE: md5 ok but unpacking failed (disk full?); the" \
                "download is kept in $DL: re-run 'bash download-datasets.sh cifar10'"
            return 1
        fi
        # Only a mirror served over HTTP may fall back to the PNG subset.
        if [ -z "$BASE_URL" ] || [[ $CHECK_MSG != "could not download"* ]]; then
            fail "CIFAR-10 cifar-10-python.tar.gz from $SOURCE: $CHECK_MSG;" \
                "re-run 'bash download-datasets.sh cifar10' (or fix the mirror)"
            return 1
        fi
    fi
    local zip="$DL/cifar-10-subset-png.zip.part"
    if ! get_verified cifar-10-subset-png.zip "$zip" check_cifar_zip; then
        fail "CIFAR-10 cifar-10-subset-png.zip from $SOURCE: $CHECK_MSG;" \
            "re-run 'bash download-datasets.sh cifar10' (or fix the mirror)"
        return 1
    fi
    if ! { new_unpack_dir cifar10 && step unzip_to "$zip" "$UNPACK"; }; then
        rm -rf "$UNPACK"
        fail "CIFAR-10 $SOURCE: md5 ok but unpacking failed (disk full?); the" \
            "download is kept in $DL: re-run 'bash download-datasets.sh cifar10'"
        return 1
    fi
    local complete=1
    for c in "${CIFAR_CLASSES[@]}"; do
        [ -d "$UNPACK/CIFAR10/train/$c" ] && [ -d "$UNPACK/CIFAR10/test/$c" ] || complete=0
    done
    if [ $complete -eq 1 ] && write_manifest "$UNPACK/CIFAR10" -name '*.png' \
        && install_dir "$UNPACK/CIFAR10" "$DATA/CIFAR10"; then
        rm -rf "$UNPACK" "$zip"
        log "  CIFAR10 (PNG subset): fetched from $SOURCE, md5 ok"
        if [ -d "$DATA/cifar-10-batches-py" ] && ! cifar_official_ok; then
            rm -rf "$DATA/cifar-10-batches-py" # loaders prefer it: it must go
            log "  cifar-10-batches-py: removed (it failed its md5 check)"
        fi
        return 0
    fi
    rm -rf "$UNPACK" "$zip"
    fail "CIFAR-10 cifar-10-subset-png.zip from $SOURCE: a class folder is missing" \
        "or the folder could not be moved into place;" \
        "re-run 'bash download-datasets.sh cifar10'"
    return 1
}

# ------------------------------------------------------------------------------ FSDD

count_wavs() { find "$1" -maxdepth 1 -name '*.wav' -type f 2>/dev/null | wc -l | tr -d ' '; }

check_zip() {
    if command -v unzip >/dev/null 2>&1 && ! unzip -tq "$1" >/dev/null 2>&1; then
        CHECK_MSG="the zip archive is corrupt or truncated (CRC check failed)"
        return 1
    fi
}

fsdd_ok() { # the recordings folder holds the 3000 WAV files it was unpacked with
    local rec="$DATA/free-spoken-digit-dataset/recordings" n
    n=$(count_wavs "$rec")
    if [ "$n" != "$FSDD_COUNT" ]; then
        CHECK_MSG="found $n WAV files, expected $FSDD_COUNT"
        return 1
    fi
    verify_tree "$rec" "$FSDD_MANIFEST_MD5" -maxdepth 1 -name '*.wav'
}

do_fsdd() {
    local final="$DATA/free-spoken-digit-dataset"
    log "fsdd -> $final/recordings"
    if [ $FORCE -eq 0 ] && [ -d "$final/recordings" ]; then
        if fsdd_ok; then
            log "  recordings: already present ($FSDD_COUNT WAV files, md5 ok)"
            return 0
        fi
        log "  recordings: $CHECK_MSG; fetching them again"
    fi
    local part="$DL/free-spoken-digit-dataset.zip.part" rec n manifest
    mkdir -p "$DATA"
    if ! get_verified free-spoken-digit-dataset.zip "$part" check_zip "$FSDD_URL"; then
        fail "FSDD free-spoken-digit-dataset.zip from $SOURCE: $CHECK_MSG;" \
            "re-run 'bash download-datasets.sh fsdd' (or fix the mirror)"
        return 1
    fi
    if ! { new_unpack_dir fsdd && step unzip_to "$part" "$UNPACK"; }; then
        rm -rf "$UNPACK"
        fail "FSDD $SOURCE: the zip passed its CRC check but unpacking failed (disk" \
            "full?); the download is kept in $DL: re-run 'bash download-datasets.sh fsdd'"
        return 1
    fi
    # The GitHub archive unpacks to free-spoken-digit-dataset-1.0.10/, the mirror
    # zip to free-spoken-digit-dataset/: take whichever folder holds recordings/.
    rec=$(find "$UNPACK" -maxdepth 3 -type d -name recordings | head -n 1)
    n=$(count_wavs "${rec:-$UNPACK/none}")
    if [ "$n" != "$FSDD_COUNT" ]; then
        rm -rf "$UNPACK" "$part"
        fail "FSDD $SOURCE: found $n WAV files in recordings/, expected $FSDD_COUNT;" \
            "re-run 'bash download-datasets.sh fsdd'"
        return 1
    fi
    write_manifest "$rec" -maxdepth 1 -name '*.wav'
    manifest=$(md5_of <"$rec/.manifest.md5")
    [ "$manifest" = "$FSDD_MANIFEST_MD5" ] || log "  warning: the recordings" \
        "differ from the copy difflab was tested with (list md5 $manifest)"
    if ! install_dir "$(dirname "$rec")" "$final"; then
        rm -rf "$UNPACK"
        fail "FSDD: could not move the recordings into $final"
        return 1
    fi
    rm -rf "$UNPACK" "$part"
    log "  recordings: fetched from $SOURCE ($FSDD_COUNT WAV files)"
}

# ------------------------------------------------------------------------------ main

main() {
    local want=() arg
    for arg in "$@"; do
        case $arg in
        mnist | cifar10 | fsdd) want+=("$arg") ;;
        -f | --force) FORCE=1 ;;
        --if-missing) IF_MISSING=1 ;;
        cifar | cifar-10) want+=(cifar10) ;;
        all) want+=(mnist cifar10 fsdd) ;;
        -h | --help)
            usage
            return 0
            ;;
        *)
            echo "error: unknown dataset '$arg' (choose from mnist, cifar10, fsdd, all; options: --force, --if-missing)" >&2
            return 2
            ;;
        esac
    done
    [ ${#want[@]} -eq 0 ] && want=(mnist cifar10 fsdd)
    if [ -n "$MIRROR" ]; then
        if [ ! -d "$MIRROR" ]; then
            echo "error: DATASETS_MIRROR=$MIRROR is not a folder" >&2
            return 2
        fi
        MIRROR="$(cd "$MIRROR" && pwd)"
        log "source: local mirror $MIRROR"
    elif [ -n "$BASE_URL" ]; then
        log "source: $BASE_URL"
    fi
    if ! mkdir -p "$DATA" 2>/dev/null || [ ! -w "$DATA" ]; then
        echo "error: cannot write to the data folder $DATA (set DIFFLAB_DATA to" \
            "a writable folder)" >&2
        return 2
    fi
    trap 'on_signal INT' INT
    trap 'on_signal TERM' TERM
    lock_data || return 1
    clean_leftovers
    local done_sets=" "
    for arg in "${want[@]}"; do
        [[ $done_sets == *" $arg "* ]] && continue
        done_sets+="$arg "
        "do_$arg"
    done
    rmdir "$DL" 2>/dev/null
    unlock_data
    if [ ${#FAILED[@]} -gt 0 ]; then
        echo "${#FAILED[@]} problem(s); the files that passed their checks were kept." >&2
        return 1
    fi
    if [ $FETCHED -eq 0 ]; then
        log "Nothing to download: everything asked for is already in $DATA."
    else
        log "Done: datasets are in $DATA."
    fi
}

main "$@"
