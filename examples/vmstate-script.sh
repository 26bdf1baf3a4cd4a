#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-or-later
# vmstate-script.sh — save, list and restore this VM's state with busctl (or dbus-send) only
# (no libvmstate), as a shell script would. Each call returns a request id at
# once. Completions are unicast signals to connections that called
# RegisterListener, which a one-shot busctl call cannot stay around for; so
# this script asks, then reads the States property (the last list). Use
# `vmstatectl --wait` when you need to follow a request to its end.
#
#   VMSTATE_PRINCIPAL=alice VMSTATE_SECRET=... ./vmstate-script.sh save LABEL
#   VMSTATE_PRINCIPAL=alice VMSTATE_SECRET=... ./vmstate-script.sh list
#   VMSTATE_PRINCIPAL=alice VMSTATE_SECRET=... ./vmstate-script.sh restore STATE_ID "message"
#
# BUSCTL_ADDRESS=unix:path=... points at another bus (tests); default: system bus.
# Without busctl (systemd's; e.g. a busybox guest) the same calls go through dbus-send
# (package dbus-bin); VMSTATE_DBUS_TOOL=busctl|dbus-send forces one.
set -eu

DEST=org.vmstate.Helper1
OBJ=/org/vmstate/Helper1
IFACE=org.vmstate.Helper1
APP=${VMSTATE_APP_ID:-org.vmstate.Script}
: "${VMSTATE_PRINCIPAL:?set VMSTATE_PRINCIPAL}"
: "${VMSTATE_SECRET:?set VMSTATE_SECRET (never put it on a command line others can read)}"

TOOL=${VMSTATE_DBUS_TOOL:-}
[ -n "$TOOL" ] || if command -v busctl >/dev/null 2>&1; then TOOL=busctl; else TOOL=dbus-send; fi

bus() {
    if [ -n "${BUSCTL_ADDRESS:-}" ]; then
        busctl --address="$BUSCTL_ADDRESS" "$@"
    else
        busctl --system "$@"
    fi
}

# dsend METHOD ARGS...: dbus-send's typed arguments (string:..., array:byte:..., dict:...)
dsend() {
    m=$1
    shift
    if [ -n "${BUSCTL_ADDRESS:-}" ]; then
        dbus-send --bus="$BUSCTL_ADDRESS" --print-reply=literal --dest="$DEST" "$OBJ" "$m" "$@"
    else
        dbus-send --system --print-reply=literal --dest="$DEST" "$OBJ" "$m" "$@"
    fi
}

# Call METHOD SIGNATURE ARGS... with the credentials dict a{ss} appended, and print the
# request id. busctl takes arguments on its command line, which is why this example reads
# the secret from the environment and runs briefly; use vmstatectl --secret-file for
# anything long-lived.
request() {
    method=$1 sig=$2
    shift 2
    reply=$(bus call "$DEST" "$OBJ" "$IFACE" "$method" "$sig" "$@" \
        2 principal "$VMSTATE_PRINCIPAL" secret "$VMSTATE_SECRET")
    echo "$reply" | sed -n 's/^s "\(.*\)"$/\1/p'
}

# dbus-send flavour: METHOD ARGS... (typed); the credentials dict is appended. dbus-send's
# dict syntax separates with commas, so principal and secret must not contain any.
drequest() {
    method=$1
    shift
    case $VMSTATE_PRINCIPAL$VMSTATE_SECRET in *,*)
        echo "dbus-send cannot pass a principal or secret containing ','" >&2; exit 2 ;;
    esac
    dsend "$IFACE.$method" "$@" \
        "dict:string:string:principal,$VMSTATE_PRINCIPAL,secret,$VMSTATE_SECRET" | tr -d ' \n'
}

# A property's value as dbus-send prints it.
dget() {
    for p in "$@"; do
        echo "$p:"
        dsend org.freedesktop.DBus.Properties.Get "string:$IFACE" "string:$p"
    done
}

# Turn a string into dbus-send's "array:byte:" form (decimal, comma-separated).
dbytes() {
    printf 'array:byte:%s' "$(printf '%s' "$1" | od -An -tu1 -v | tr -s ' \n' ',' | sed 's/^,//; s/,$//')"
}

if [ "$TOOL" = dbus-send ]; then
    case "${1:-}" in
    save)
        label=${2:?label}
        echo "save requested: $(drequest Save "string:$label" "string:$APP" array:byte:)"
        ;;
    list)
        id=$(drequest ListStates "string:$APP")
        echo "list requested: $id; last known list:"
        sleep "${VMSTATE_LIST_WAIT:-1}"
        dget States
        ;;
    restore)
        state=${2:?state id}
        msg=${3:-restored by vmstate-script.sh}
        echo "restore requested: $(drequest Restore "string:$state" "string:$APP" "$(dbytes "$msg")")"
        ;;
    status)
        dget BridgeConnected Epoch
        ;;
    *)
        echo "usage: $0 save LABEL | list | restore STATE_ID [MESSAGE] | status" >&2
        exit 2
        ;;
    esac
    exit 0
fi

# Turn a string into busctl's "ay" form: count followed by the bytes.
bytes() {
    printf '%s' "$1" | od -An -tu1 -v | tr -s ' \n' ' ' | {
        read -r b || true # no trailing newline: read fails but fills b
        set -- $b
        echo "$#" "$@"
    }
}

case "${1:-}" in
save)
    label=${2:?label}
    id=$(request Save 'ssaya{ss}' "$label" "$APP" 0)
    echo "save requested: $id"
    ;;
list)
    id=$(request ListStates 'sa{ss}' "$APP")
    echo "list requested: $id; last known list:"
    sleep "${VMSTATE_LIST_WAIT:-1}"
    bus get-property "$DEST" "$OBJ" "$IFACE" States
    ;;
restore)
    state=${2:?state id}
    msg=${3:-restored by vmstate-script.sh}
    # shellcheck disable=SC2046 # bytes prints numbers only
    id=$(request Restore 'ssaya{ss}' "$state" "$APP" $(bytes "$msg"))
    echo "restore requested: $id"
    ;;
status)
    bus get-property "$DEST" "$OBJ" "$IFACE" BridgeConnected Epoch
    ;;
*)
    echo "usage: $0 save LABEL | list | restore STATE_ID [MESSAGE] | status" >&2
    exit 2
    ;;
esac
