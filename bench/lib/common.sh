# common.sh: sourced by the bench/ scripts (bash).  bench_init makes the
# work dir and the pids array and installs the traps; everything started
# and added to pids is stopped by PID on exit (TERM, a bounded wait, then
# KILL), and the work dir removed unless KEEP_WORK=1.

# bench_init NAME: work=/tmp/portcullis-NAME.XXXXXX, pids=().
bench_init() {
	work=$(mktemp -d "/tmp/portcullis-$1.XXXXXX")
	pids=()
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
	export no_proxy='*' NO_PROXY='*'	# curl: never a proxy from the env
}

bench_cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		stop_pid "$pid"
	done
	if [ "${KEEP_WORK:-0}" = 1 ]; then
		echo "work dir kept: $work" >&2
	else
		rm -rf "$work"
	fi
}

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL WHAT PID LOG: poll until URL answers 2xx or 401, at most
# 30 s; fail early, showing LOG, if PID died.
wait_http() {
	local i code
	for i in $(seq 300); do
		code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true)
		case $code in 2??|401) return 0;; esac
		kill -0 "$3" 2>/dev/null || { echo "$2 exited; log:" >&2; tail -20 "$4" >&2; exit 1; }
		sleep 0.1
	done
	echo "$2 not ready after 30 s; log:" >&2
	tail -20 "$4" >&2
	exit 1
}

# stop_pid PID: TERM, a bounded wait, then KILL (it is one of ours).
stop_pid() {
	local i
	kill -TERM "$1" 2>/dev/null || true
	for i in $(seq 100); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

# start_registry [access]: docker-registry ($DOCKER_REGISTRY_BIN) on a free
# port, storage under $work/registry; sets rport, rpid and R.  With
# "access" its access log goes to $work/registry/access.log, the witness
# of upstream requests.
start_registry() {
	local accesslog=true
	[ "${1:-}" = access ] && accesslog=false
	rport=$(free_port)
	mkdir -p "$work/registry/storage"
	cat > "$work/registry/config.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: $accesslog
storage:
  filesystem:
    rootdirectory: $work/registry/storage
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$rport
  secret: portcullis-bench
health:
  storagedriver:
    enabled: false
YML
	if [ "$accesslog" = false ]; then
		"$DOCKER_REGISTRY_BIN" serve "$work/registry/config.yml" \
			> "$work/registry/access.log" 2> "$work/registry/log" &
	else
		"$DOCKER_REGISTRY_BIN" serve "$work/registry/config.yml" \
			> "$work/registry/log" 2>&1 &
	fi
	rpid=$!
	pids+=($rpid)
	R=http://127.0.0.1:$rport
	wait_http "$R/v2/" docker-registry "$rpid" "$work/registry/log"
}

# push_blob FILE DIGEST: upload FILE as blob DIGEST of bench/app to the
# registry at $R (start_registry), in one PUT from memory (small files).
push_blob() {
	local loc sep
	loc=$(curl -s -D - -o /dev/null -X POST "$R/v2/bench/app/blobs/uploads/" |
		tr -d '\r' | sed -n 's/^Location: //Ip')
	case $loc in http*) ;; *) loc=$R$loc;; esac
	case $loc in *\?*) sep='&';; *) sep='?';; esac
	curl -sf -X PUT --data-binary @"$1" \
		-H 'Content-Type: application/octet-stream' \
		"$loc${sep}digest=$2" -o /dev/null
}

# push_small_image: one image in bench/app of the registry at $R, tag v1:
# a 4 KiB random layer and the config {}; sets MT (the manifest's media
# type) and man_d (its digest).
push_small_image() {
	local layer_d cfg_d
	head -c 4096 /dev/urandom > "$work/layer"
	layer_d=sha256:$(sha256sum "$work/layer" | cut -d' ' -f1)
	printf '{}' > "$work/img-config.json"
	cfg_d=sha256:$(sha256sum "$work/img-config.json" | cut -d' ' -f1)
	push_blob "$work/layer" "$layer_d"
	push_blob "$work/img-config.json" "$cfg_d"
	MT=application/vnd.oci.image.manifest.v1+json
	printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":4096}]}' \
		"$MT" "$cfg_d" "$layer_d" > "$work/manifest.json"
	man_d=sha256:$(sha256sum "$work/manifest.json" | cut -d' ' -f1)
	curl -sf -X PUT -H "Content-Type: $MT" --data-binary @"$work/manifest.json" \
		-o /dev/null "$R/v2/bench/app/manifests/v1"
}
