#!/usr/bin/env bash
# Fetch the datasets difflab can use, verify them, and unpack them into data/.
#
#   bash download-datasets.sh [mnist] [cifar10] [fsdd] [all]     (default: all)
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
#
# Guarantees: a second run downloads nothing; an interrupted download resumes
# (wget -c / curl -C -); files are fetched to *.part, verified, then renamed, and
# archives are unpacked into a temporary folder that is renamed when complete, so
# a half-written file is never taken as done; a file that fails its check is
# reported by name, removed, and the others are kept; the exit status is non-zero
# if anything failed.
#
# Checks: MNIST by the md5 of the *uncompressed* IDX files (so re-gzipped copies
# pass); the CIFAR-10 archive by its published md5; the CIFAR-10 PNG subset by
# the md5 of the project's zip; FSDD by the zip's CRCs and the count of WAV files
# (3000). GitHub builds tag archives on the fly and publishes no checksum for
# them, so FSDD has no archive md5; the md5 of the per-file md5 list of the
# recordings the project was tested with is compared, and a mismatch only warns.

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
CIFAR_FILES=(data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5
    test_batch batches.meta)
CIFAR_CLASSES=(airplane automobile bird cat deer dog frog horse ship truck)
FSDD_URL="https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.zip"
FSDD_COUNT=3000
FSDD_MANIFEST_MD5="bdbabe32fa657162edfdcdbd292aecd5"

FAILED=()
FETCHED=0

log() { printf '%s\n' "$*"; }
fail() {
    printf 'error: %s\n' "$*" >&2
    FAILED+=("$1")
}

usage() {
    sed -n '2,4p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    log "Environment: DATASETS_MIRROR=DIR, DATASETS_BASE_URL=URL, DIFFLAB_DATA=DIR"
}

md5_of() { # md5 of a file, or of stdin when no argument
    if command -v md5sum >/dev/null 2>&1; then
        md5sum "$@" | cut -d' ' -f1
    else
        md5 -q "$@"
    fi
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
        wget -q "${tty[@]}" -c --tries=3 --timeout=30 -O "$part" "$url"
        rc=$?
        # 4 is a network failure: keep the partial file so the next run resumes.
        if [ $rc -ne 0 ] && [ $rc -ne 4 ] && [ -s "$part" ]; then
            rm -f "$part" # the server refused to resume: start again
            wget -q "${tty[@]}" --tries=3 --timeout=30 -O "$part" "$url"
            rc=$?
        fi
    elif [ "$DOWNLOADER" = curl ] && command -v curl >/dev/null 2>&1; then
        [ -t 2 ] && tty=(-#) || tty=(-s)
        curl -fL "${tty[@]}" --retry 2 --connect-timeout 30 -C - -o "$part" "$url"
        rc=$?
        # 6, 7, 18, 28, 56: network trouble; keep the partial file to resume later.
        if [ $rc -ne 0 ] && [[ " 6 7 18 28 56 " != *" $rc "* ]] && [ -s "$part" ]; then
            rm -f "$part"
            curl -fL "${tty[@]}" --retry 2 --connect-timeout 30 -o "$part" "$url"
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
    if [ -f "$out" ] && [ "$(md5_of "$out")" = "$MNIST_MD5" ]; then
        log "  $MNIST_NAME: already present, md5 ok"
        return 0
    fi
    mkdir -p "$DATA/MNIST/raw"
    # A mirror may hold the uncompressed file (another checkout's data/, say).
    if [ -n "$MIRROR" ] && [ ! -f "$MIRROR/MNIST/raw/$1.gz" ] \
        && [ -f "$MIRROR/MNIST/raw/$1" ]; then
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
    gunzip -c "$part" >"$out.part" && mv -f "$out.part" "$out" && rm -f "$part"
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

cifar_official_done() {
    local f
    for f in "${CIFAR_FILES[@]}"; do
        [ -f "$DATA/cifar-10-batches-py/$f" ] || return 1
    done
}

cifar_png_done() { [ -d "$DATA/CIFAR10/train/truck" ] && [ -d "$DATA/CIFAR10/test/truck" ]; }

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

do_cifar10() {
    log "cifar10 -> $DATA"
    if cifar_official_done; then
        log "  cifar-10-batches-py: already present"
        return 0
    fi
    if { [ -n "$MIRROR" ] || [ -n "$BASE_URL" ]; } && cifar_png_done; then
        log "  CIFAR10 (PNG subset): already present"
        return 0
    fi
    local tmp c
    mkdir -p "$DATA"
    local use_zip=0
    [ -n "$MIRROR" ] && [ ! -f "$MIRROR/cifar-10-python.tar.gz" ] \
        && [ -f "$MIRROR/cifar-10-subset-png.zip" ] && use_zip=1
    if [ $use_zip -eq 0 ]; then
        if get_verified cifar-10-python.tar.gz "$DL/cifar-10-python.tar.gz.part" \
            check_cifar_tar "$CIFAR_URL"; then
            tmp=$(mktemp -d "$DATA/.unpack-cifar10.XXXXXX")
            if tar -xzf "$DL/cifar-10-python.tar.gz.part" -C "$tmp" \
                && install_dir "$tmp/cifar-10-batches-py" "$DATA/cifar-10-batches-py" \
                && cifar_official_done; then
                rm -rf "$tmp" "$DL/cifar-10-python.tar.gz.part"
                log "  cifar-10-batches-py: fetched from $SOURCE, md5 ok"
                return 0
            fi
            rm -rf "$tmp"
            fail "CIFAR-10 $SOURCE: md5 ok but unpacking failed (disk full?);" \
                "re-run 'bash download-datasets.sh cifar10'"
            return 1
        fi
        # Only a mirror served over HTTP may fall back to the PNG subset.
        if [ -z "$BASE_URL" ] || [[ $CHECK_MSG != "could not download"* ]]; then
            fail "CIFAR-10 cifar-10-python.tar.gz from $SOURCE: $CHECK_MSG;" \
                "re-run 'bash download-datasets.sh cifar10' (or fix the mirror)"
            return 1
        fi
    fi
    if ! get_verified cifar-10-subset-png.zip "$DL/cifar-10-subset-png.zip.part" \
        check_cifar_zip; then
        fail "CIFAR-10 cifar-10-subset-png.zip from $SOURCE: $CHECK_MSG;" \
            "re-run 'bash download-datasets.sh cifar10' (or fix the mirror)"
        return 1
    fi
    tmp=$(mktemp -d "$DATA/.unpack-cifar10.XXXXXX")
    local complete=0
    if unzip_to "$DL/cifar-10-subset-png.zip.part" "$tmp"; then
        complete=1
        for c in "${CIFAR_CLASSES[@]}"; do
            [ -d "$tmp/CIFAR10/train/$c" ] && [ -d "$tmp/CIFAR10/test/$c" ] || complete=0
        done
        if [ $complete -eq 1 ] && install_dir "$tmp/CIFAR10" "$DATA/CIFAR10"; then
            rm -rf "$tmp" "$DL/cifar-10-subset-png.zip.part"
            log "  CIFAR10 (PNG subset): fetched from $SOURCE, md5 ok"
            return 0
        fi
    fi
    rm -rf "$tmp" "$DL/cifar-10-subset-png.zip.part"
    fail "CIFAR-10 cifar-10-subset-png.zip from $SOURCE: unpacking failed or a" \
        "class folder is missing; re-run 'bash download-datasets.sh cifar10'"
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

do_fsdd() {
    local final="$DATA/free-spoken-digit-dataset"
    log "fsdd -> $final/recordings"
    if [ "$(count_wavs "$final/recordings")" = "$FSDD_COUNT" ]; then
        log "  recordings: already present ($FSDD_COUNT WAV files)"
        return 0
    fi
    local part="$DL/free-spoken-digit-dataset.zip.part" tmp rec n manifest
    mkdir -p "$DATA"
    if ! get_verified free-spoken-digit-dataset.zip "$part" check_zip "$FSDD_URL"; then
        fail "FSDD free-spoken-digit-dataset.zip from $SOURCE: $CHECK_MSG;" \
            "re-run 'bash download-datasets.sh fsdd' (or fix the mirror)"
        return 1
    fi
    tmp=$(mktemp -d "$DATA/.unpack-fsdd.XXXXXX")
    if ! unzip_to "$part" "$tmp"; then
        rm -rf "$tmp" "$part"
        fail "FSDD $SOURCE: unpacking failed (corrupt zip or disk full);" \
            "re-run 'bash download-datasets.sh fsdd'"
        return 1
    fi
    # The GitHub archive unpacks to free-spoken-digit-dataset-1.0.10/, the mirror
    # zip to free-spoken-digit-dataset/: take whichever folder holds recordings/.
    rec=$(find "$tmp" -maxdepth 3 -type d -name recordings | head -n 1)
    n=$(count_wavs "${rec:-$tmp/none}")
    if [ "$n" != "$FSDD_COUNT" ]; then
        rm -rf "$tmp" "$part"
        fail "FSDD $SOURCE: found $n WAV files in recordings/, expected $FSDD_COUNT;" \
            "re-run 'bash download-datasets.sh fsdd'"
        return 1
    fi
    if command -v md5sum >/dev/null 2>&1; then
        manifest=$(cd "$rec" && LC_ALL=C ls | LC_ALL=C sort | xargs md5sum | md5sum \
            | cut -d' ' -f1)
        [ "$manifest" = "$FSDD_MANIFEST_MD5" ] || log "  warning: the recordings" \
            "differ from the copy difflab was tested with (list md5 $manifest)"
    fi
    if ! install_dir "$(dirname "$rec")" "$final"; then
        rm -rf "$tmp"
        fail "FSDD: could not move the recordings into $final"
        return 1
    fi
    rm -rf "$tmp" "$part"
    log "  recordings: fetched from $SOURCE ($FSDD_COUNT WAV files)"
}

# ------------------------------------------------------------------------------ main

main() {
    local want=() arg
    for arg in "$@"; do
        case $arg in
        mnist | cifar10 | fsdd) want+=("$arg") ;;
        cifar | cifar-10) want+=(cifar10) ;;
        all) want+=(mnist cifar10 fsdd) ;;
        -h | --help)
            usage
            return 0
            ;;
        *)
            echo "error: unknown dataset '$arg' (choose from mnist, cifar10, fsdd, all)" >&2
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
    local done_sets=" "
    for arg in "${want[@]}"; do
        [[ $done_sets == *" $arg "* ]] && continue
        done_sets+="$arg "
        "do_$arg"
    done
    rmdir "$DL" 2>/dev/null
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
