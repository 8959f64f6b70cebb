#!/usr/bin/env bash
# Deploy the qudag-node testnet to Fly.io: four apps, qudag-node1..qudag-node4, one validator
# each, every app with its volume, its secrets and its Machine. Safe to run again: it only
# does what is missing or out of date. Run it with --help for the details.
set -euo pipefail

usage() {
	cat <<'EOF'
Usage: scripts/deploy.sh [--dry-run] [--regions a,b,c,d] [--org ORG] [--genesis PATH]
                         [--urls U1,U2,U3,U4] [--force] [--rotate-token]
                         [--api-token-file PATH] [--rotate-api-token] [--help]

Deploys the four apps qudag-node1..4 (node ids node1..4) to Fly.io, in this order:
  1. checks that flyctl is installed and logged in;
  2. checks that Fly offers the regions (default yyz,iad,ord,ewr; node I gets the I-th);
  3. creates the apps that do not exist yet (in --org ORG if given);
  4. creates the volume dag_data of each app in its region, if missing;
  5. makes what each app lacks, and stages it as secrets (never on a command line):
     NODE_PRIVATE_KEY per node, the shared PEER_AUTH_TOKEN, QUDAG_VALIDATORS, and the
     shared QUDAG_API_TOKEN that writes to the public API must carry; the public keys go
     to the genesis file (default fly/genesis.json): a public record, commit it; a new
     API token goes to the API token file (default: api-token beside the genesis file,
     mode 0600, never committed), since Fly never shows a secret again;
  6. deploys each app whose image label (a digest of the files the image and fly.toml are
     made of, its region and the validator set) differs from the one it runs, or that has
     secrets staged;
  7. waits for the Machines to be started with passing checks, submits one transaction to
     node1 (with the API token) and waits until all four nodes report it final.

Options:
  --dry-run        show every fly command; run only those that read (whoami, regions,
                   lists, status); make no key, write no file, change nothing
  --regions LIST   four region codes for node1..node4 (default yyz,iad,ord,ewr)
  --org ORG        the Fly organization for new apps
  --genesis PATH   the genesis file (default fly/genesis.json)
  --urls LIST      the four nodes' API URLs for step 7 (default https://qudag-nodeI.fly.dev;
                   also QUDAG_DEPLOY_URLS)
  --force          deploy every app, even one that runs the current label
  --rotate-token   stage a new PEER_AUTH_TOKEN on all four apps (and deploy them)
  --api-token-file PATH
                   where the API token is kept (default: api-token beside the genesis file)
  --rotate-api-token
                   stage a new QUDAG_API_TOKEN on all four apps (and deploy them)
  --help           show this text

Environment: QUDAG_NODE (the qudag-node command; default: on PATH, then .venv/bin),
QUDAG_DEPLOY_URLS, QUDAG_DEPLOY_WAIT (seconds for Machines to be healthy, default 300),
QUDAG_API_TOKEN (the API token, instead of the file's: staged when no app has one or with
--rotate-api-token, then kept in the file too; sent with the check transaction).

A key that an app lost cannot be made again: Fly never shows a secret's value. To start a
new network instead, remove the genesis file and destroy the four apps (fly apps destroy
qudag-nodeN): their keys and databases belong to the old network. Then run this again.
EOF
}

die() {
	printf 'deploy.sh: %s\n' "$*" >&2
	exit 1
}

usage_error() {
	printf 'deploy.sh: %s (see --help)\n' "$*" >&2
	exit 2
}

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }

# --- options ------------------------------------------------------------------------------

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
DRY_RUN=0
FORCE=0
ROTATE_TOKEN=0
ROTATE_API_TOKEN=0
API_TOKEN_FILE=""
REGIONS=""
ORG=""
GENESIS="$REPO/fly/genesis.json"
URLS=${QUDAG_DEPLOY_URLS:-}
WAIT=${QUDAG_DEPLOY_WAIT:-300}
TX_TIMEOUT=60

while [ $# -gt 0 ]; do
	case $1 in
	--dry-run) DRY_RUN=1 ;;
	--force) FORCE=1 ;;
	--rotate-token) ROTATE_TOKEN=1 ;;
	--rotate-api-token) ROTATE_API_TOKEN=1 ;;
	--help | -h)
		usage
		exit 0
		;;
	--regions | --org | --genesis | --urls | --api-token-file)
		[ $# -ge 2 ] || usage_error "$1 needs a value"
		case $1 in
		--regions) REGIONS=$2 ;;
		--org) ORG=$2 ;;
		--genesis) GENESIS=$2 ;;
		--urls) URLS=$2 ;;
		--api-token-file) API_TOKEN_FILE=$2 ;;
		esac
		shift
		;;
	*) usage_error "unknown argument: $1" ;;
	esac
	shift
done

case $WAIT in
'' | *[!0-9]*) usage_error "QUDAG_DEPLOY_WAIT must be whole seconds, not '$WAIT'" ;;
esac
case $GENESIS in
/*) ;;
*) GENESIS="$PWD/$GENESIS" ;;
esac
API_TOKEN_FILE=${API_TOKEN_FILE:-$(dirname "$GENESIS")/api-token}
case $API_TOKEN_FILE in
/*) ;;
*) API_TOKEN_FILE="$PWD/$API_TOKEN_FILE" ;;
esac
# The API token the operator gave; the caller's variable must not reach qudag-node below.
GIVEN_API_TOKEN=${QUDAG_API_TOKEN:-}
unset QUDAG_API_TOKEN
cd "$REPO"

command -v python3 >/dev/null || die "python3 (3.11 or newer) is needed and not installed"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
	die "python3 is $(python3 -V 2>&1); 3.11 or newer is needed"

support() { python3 "$REPO/scripts/deploy_support.py" "$@"; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# Lines that trace fly commands go to fd 3, the script's stdout, also from inside $(...).
exec 3>&1

# --- fly ----------------------------------------------------------------------------------

FLY=""
FLY_NAME=fly

# fly_read ARGS...: run a fly command that only reads; its stdout is the function's.
fly_read() {
	printf '+ %s %s\n' "$FLY_NAME" "$*" >&3
	"$FLY" "$@" </dev/null
}

# fly_change ARGS...: run a fly command that changes something; a dry run only shows it.
fly_change() {
	printf '+ %s %s\n' "$FLY_NAME" "$*"
	if [ "$DRY_RUN" = 1 ]; then
		say "  (dry run: not run)"
		return 0
	fi
	"$FLY" "$@" </dev/null
}

# stage_secrets APP SHOWN LINES: stage NAME=VALUE LINES on APP through stdin, so that no
# value is ever on a command line; SHOWN is what may be printed of them.
stage_secrets() {
	printf '+ %s secrets import --stage -a %s  (stdin:%s)\n' "$FLY_NAME" "$1" "$2"
	if [ "$DRY_RUN" = 1 ]; then
		say "  (dry run: not run)"
		return 0
	fi
	printf '%s' "$3" | "$FLY" secrets import --stage -a "$1"
}

# --- the plan -----------------------------------------------------------------------------

step "Configs"
CONFIG_DIR=$(cd "$WORK" && pwd -P)/configs
plan=$(python3 "$REPO/fly/generate.py" ${REGIONS:+--regions "$REGIONS"} --out "$CONFIG_DIR") ||
	usage_error "invalid --regions"
APPS=()
NODES=()
APP_REGIONS=()
CONFIGS=()
while read -r app node region config; do
	APPS+=("$app")
	NODES+=("$node")
	APP_REGIONS+=("$region")
	CONFIGS+=("$config")
	say "$app: node $node in $region, $config"
done <<<"$plan"
REGIONS=$(
	IFS=,
	echo "${APP_REGIONS[*]}"
)
COUNT=${#APPS[@]}

spec=$(support app-spec "${CONFIGS[0]}") || exit 1
while read -r key value; do
	case $key in
	volume) VOLUME=$value ;;
	volume_size_gb) VOLUME_SIZE_GB=$value ;;
	snapshot_retention) SNAPSHOT_RETENTION=$value ;;
	network_id) NETWORK_ID=$value ;;
	esac
done <<<"$spec"

if [ -n "$URLS" ]; then
	IFS=, read -r -a NODE_URLS <<<"$URLS"
	[ "${#NODE_URLS[@]}" = "$COUNT" ] || usage_error "--urls needs $COUNT URLs, node1 first"
else
	NODE_URLS=()
	for app in "${APPS[@]}"; do NODE_URLS+=("https://$app.fly.dev"); done
fi

if [ -n "${QUDAG_NODE:-}" ]; then
	QN=("$QUDAG_NODE")
elif command -v qudag-node >/dev/null; then
	QN=(qudag-node)
elif [ -x "$REPO/.venv/bin/qudag-node" ]; then
	QN=("$REPO/.venv/bin/qudag-node")
else
	QN=(python3 -m qudag_node)
fi
"${QN[@]}" --version >/dev/null 2>&1 ||
	die "cannot run qudag-node (${QN[*]}): run 'make install' in $REPO, or set QUDAG_NODE"

# --- 1. fly and the login -----------------------------------------------------------------

step "1. Fly CLI and login"
if FLY=$(command -v fly); then
	FLY_NAME=fly
elif FLY=$(command -v flyctl); then
	FLY_NAME=flyctl
else
	die "flyctl is not installed: curl -L https://fly.io/install.sh | sh" \
		"(see https://fly.io/docs/flyctl/install/), then run fly auth login"
fi
whoami=$(fly_read auth whoami) || die "not logged in to Fly.io: run fly auth login"
say "logged in as $whoami"

# --- 2. regions ---------------------------------------------------------------------------

step "2. Regions $REGIONS"
regions_json=$(fly_read platform regions --json) || die "cannot list Fly's regions"
support check-regions "$REGIONS" <<<"$regions_json" || exit 1

# --- 3. apps ------------------------------------------------------------------------------

step "3. Apps"
apps_json=$(fly_read apps list --json) || die "cannot list the apps"
app_names=$(support names <<<"$apps_json") || exit 1
EXISTS=()
for i in "${!APPS[@]}"; do
	app=${APPS[i]}
	if grep -Fqx -- "$app" <<<"$app_names"; then
		say "$app exists"
		EXISTS[i]=1
		continue
	fi
	fly_change apps create "$app" ${ORG:+--org "$ORG"} || die "cannot create app $app"
	EXISTS[i]=$((1 - DRY_RUN))
done

# --- 4. volumes ---------------------------------------------------------------------------

step "4. Volumes ($VOLUME, ${VOLUME_SIZE_GB} GB, snapshots kept $SNAPSHOT_RETENTION days)"
for i in "${!APPS[@]}"; do
	app=${APPS[i]}
	region=${APP_REGIONS[i]}
	state=absent
	if [ "${EXISTS[i]}" = 1 ]; then
		volumes_json=$(fly_read volumes list -a "$app" --json) || die "cannot list the volumes of $app"
		state=$(support volume-state "$app" "$VOLUME" "$region" <<<"$volumes_json") || exit 1
	fi
	if [ "$state" = present ]; then
		say "$app has $VOLUME in $region"
		continue
	fi
	fly_change volumes create "$VOLUME" --region "$region" --size "$VOLUME_SIZE_GB" \
		--snapshot-retention "$SNAPSHOT_RETENTION" -a "$app" --yes ||
		die "cannot create volume $VOLUME of $app in $region"
done

# --- 5. keys, genesis, token --------------------------------------------------------------

step "5. Keys, genesis and peer token"
HAS_KEY=()
HAS_TOKEN=()
HAS_API_TOKEN=()
HAS_VALIDATORS=()
UNDEPLOYED=()
RUNNING=()
for i in "${!APPS[@]}"; do
	app=${APPS[i]}
	HAS_KEY[i]=0
	HAS_TOKEN[i]=0
	HAS_API_TOKEN[i]=0
	HAS_VALIDATORS[i]=0
	UNDEPLOYED[i]=0
	RUNNING[i]=""
	[ "${EXISTS[i]}" = 1 ] || continue
	secrets_json=$(fly_read secrets list -a "$app" --json) || die "cannot list the secrets of $app"
	listed=$(support secrets <<<"$secrets_json") || exit 1
	while read -r name status; do
		case $name in
		NODE_PRIVATE_KEY) HAS_KEY[i]=1 ;;
		PEER_AUTH_TOKEN) HAS_TOKEN[i]=1 ;;
		QUDAG_API_TOKEN) HAS_API_TOKEN[i]=1 ;;
		QUDAG_VALIDATORS) HAS_VALIDATORS[i]=1 ;;
		esac
		case $status in Staged | Partial) UNDEPLOYED[i]=1 ;; esac
	done <<<"$listed"
	status_json=$(fly_read status -a "$app" --json) || die "cannot read the status of $app"
	RUNNING[i]=$(support running-tag <<<"$status_json") || exit 1
	say "$app: key $([ "${HAS_KEY[i]}" = 1 ] && echo set || echo missing)," \
		"token $([ "${HAS_TOKEN[i]}" = 1 ] && echo set || echo missing)," \
		"API token $([ "${HAS_API_TOKEN[i]}" = 1 ] && echo set || echo missing)," \
		"runs ${RUNNING[i]:-nothing yet}"
done

genesis=$(support genesis-check "$GENESIS" "$NETWORK_ID" "${NODES[@]}") || exit 1
NEW_KEYS=0
PRIVATE_KEYS=()
if [ "$genesis" = absent ]; then
	for i in "${!APPS[@]}"; do
		[ "${HAS_KEY[i]}" = 0 ] ||
			die "${APPS[i]} has a NODE_PRIVATE_KEY secret, but $GENESIS does not exist," \
				"so its public key is unknown. Restore the genesis file written with that key" \
				"(it is a public record, e.g. in git), or start a new network (see --help)."
	done
	NEW_KEYS=1
	if [ "$DRY_RUN" = 1 ]; then
		VALIDATORS=""
		say "would make $COUNT keys with qudag-node keygen and write $GENESIS (dry run: not done)"
	else
		entries=()
		for i in "${!APPS[@]}"; do
			pair=$("${QN[@]}" keygen --json | support keypair) || die "qudag-node keygen failed"
			PRIVATE_KEYS[i]=${pair%% *}
			entries+=("${NODES[i]}=${pair##* }")
		done
		VALIDATORS=$(
			IFS=,
			echo "${entries[*]}"
		)
		say "+ qudag-node genesis --network-id $NETWORK_ID" \
			"--validators <the $COUNT public keys> --out $GENESIS"
		"${QN[@]}" genesis --network-id "$NETWORK_ID" --validators "$VALIDATORS" --out "$GENESIS" ||
			die "cannot write $GENESIS"
		say "wrote $GENESIS: commit it, it is the network's public record"
	fi
else
	VALIDATORS=$genesis
	for i in "${!APPS[@]}"; do
		[ "${HAS_KEY[i]}" = 1 ] ||
			die "$GENESIS lists the public key of ${NODES[i]}, but ${APPS[i]} has no" \
				"NODE_PRIVATE_KEY secret. Stage the private key that belongs to it (run" \
				"fly secrets import --stage -a ${APPS[i]}, type NODE_PRIVATE_KEY=<the key>" \
				"and Ctrl-D), or start a new network (see --help)."
	done
	say "$GENESIS lists ${NODES[*]}"
fi

tokens=0
for i in "${!APPS[@]}"; do tokens=$((tokens + HAS_TOKEN[i])); done
NEW_TOKEN=0
if [ "$ROTATE_TOKEN" = 1 ] || [ "$tokens" = 0 ]; then
	NEW_TOKEN=1
	[ "$DRY_RUN" = 1 ] || TOKEN=$(support token)
elif [ "$tokens" != "$COUNT" ]; then
	with=()
	without=()
	for i in "${!APPS[@]}"; do
		if [ "${HAS_TOKEN[i]}" = 1 ]; then with+=("${APPS[i]}"); else without+=("${APPS[i]}"); fi
	done
	die "PEER_AUTH_TOKEN is set on ${with[*]} but not on ${without[*]}. Fly never shows a" \
		"secret's value, so the token cannot be copied to the others: run again with" \
		"--rotate-token to stage a new token on all $COUNT apps (all are deployed again)."
fi

# The API token: one for all four apps, like the peer token. Fly never shows it again, so
# the operator keeps it: in QUDAG_API_TOKEN, or in the file this script writes a new one to.
KNOWN_API_TOKEN=$GIVEN_API_TOKEN
API_TOKEN_FROM="QUDAG_API_TOKEN"
if [ -z "$KNOWN_API_TOKEN" ] && [ -f "$API_TOKEN_FILE" ]; then
	KNOWN_API_TOKEN=$(support read-token "$API_TOKEN_FILE") || exit 1
	API_TOKEN_FROM=$API_TOKEN_FILE
fi
api_tokens=0
for i in "${!APPS[@]}"; do api_tokens=$((api_tokens + HAS_API_TOKEN[i])); done
NEW_API_TOKEN=0
if [ "$ROTATE_API_TOKEN" = 1 ] || [ "$api_tokens" = 0 ]; then
	NEW_API_TOKEN=1
	if [ -n "$GIVEN_API_TOKEN" ]; then
		API_TOKEN=$GIVEN_API_TOKEN
		say "the API token to stage: QUDAG_API_TOKEN"
	elif [ "$ROTATE_API_TOKEN" = 0 ] && [ -n "$KNOWN_API_TOKEN" ]; then
		API_TOKEN=$KNOWN_API_TOKEN
		say "the API token to stage: $API_TOKEN_FILE"
	elif [ "$DRY_RUN" = 0 ]; then
		API_TOKEN=$(support token)
		say "the API token to stage: a new one"
	fi
	if [ "$DRY_RUN" = 1 ]; then
		say "would stage the API token and keep it in $API_TOKEN_FILE (dry run: not done)"
	else
		# The file always holds the token staged last: the one clients need.
		support write-token "$API_TOKEN_FILE" <<<"$API_TOKEN" || exit 1
		say "the API token is in $API_TOKEN_FILE (mode 0600): keep it private; clients" \
			"send it as Authorization: Bearer <token>"
	fi
	KNOWN_API_TOKEN=${API_TOKEN:-}
elif [ "$api_tokens" != "$COUNT" ]; then
	with=()
	without=()
	for i in "${!APPS[@]}"; do
		if [ "${HAS_API_TOKEN[i]}" = 1 ]; then with+=("${APPS[i]}"); else without+=("${APPS[i]}"); fi
	done
	die "QUDAG_API_TOKEN is set on ${with[*]} but not on ${without[*]}. Fly never shows a" \
		"secret's value: run again with --rotate-api-token to stage one token on all $COUNT" \
		"apps (with QUDAG_API_TOKEN set to choose it; all are deployed again)."
elif [ -z "$KNOWN_API_TOKEN" ]; then
	die "the apps require an API token for writes, and the check of step 7 submits one:" \
		"set QUDAG_API_TOKEN to it, or keep it in $API_TOKEN_FILE (--api-token-file)." \
		"A lost token cannot be read back from Fly: --rotate-api-token stages a new one."
else
	say "the API token for the check: $API_TOKEN_FROM"
fi

if [ -n "$VALIDATORS" ]; then
	targets=()
	for i in "${!APPS[@]}"; do targets+=("${APPS[i]}:${APP_REGIONS[i]}"); done
	labels=$(support labels "$REPO" "$VALIDATORS" "${targets[@]}") || exit 1
	LABELS=()
	while read -r app label; do LABELS+=("$label"); done <<<"$labels"
else
	LABELS=()
	for i in "${!APPS[@]}"; do LABELS[i]="<made-once-the-keys-exist>"; done
fi

STAGED=()
for i in "${!APPS[@]}"; do
	app=${APPS[i]}
	lines=""
	shown=""
	if [ "$NEW_KEYS" = 1 ]; then
		lines+="NODE_PRIVATE_KEY=${PRIVATE_KEYS[i]:-}"$'\n'
		shown+=" NODE_PRIVATE_KEY=<new>"
	fi
	if [ "$NEW_TOKEN" = 1 ]; then
		lines+="PEER_AUTH_TOKEN=${TOKEN:-}"$'\n'
		shown+=" PEER_AUTH_TOKEN=<new>"
	fi
	if [ "$NEW_API_TOKEN" = 1 ]; then
		lines+="QUDAG_API_TOKEN=${API_TOKEN:-}"$'\n'
		shown+=" QUDAG_API_TOKEN=<set>"
	fi
	# The label's first part is the digest of the validator set the app was deployed with.
	if [ "${HAS_VALIDATORS[i]}" = 0 ] || [ "${RUNNING[i]%%-*}" != "${LABELS[i]%%-*}" ]; then
		lines+="QUDAG_VALIDATORS=$VALIDATORS"$'\n'
		shown+=" QUDAG_VALIDATORS=<from $(basename "$GENESIS")>"
	fi
	STAGED[i]=0
	if [ -z "$lines" ]; then
		say "$app has all its secrets"
		continue
	fi
	stage_secrets "$app" "$shown" "$lines" || die "cannot stage the secrets of $app"
	STAGED[i]=1
done

# --- 6. deploy ----------------------------------------------------------------------------

step "6. Deploy"
for i in "${!APPS[@]}"; do
	app=${APPS[i]}
	label=${LABELS[i]}
	if [ "$FORCE" = 0 ] && [ "${STAGED[i]}" = 0 ] && [ "${UNDEPLOYED[i]}" = 0 ] &&
		[ "${RUNNING[i]}" = "$label" ]; then
		say "$app runs $label already: not deployed (--force deploys anyway)"
		continue
	fi
	if ! fly_change deploy . --config "${CONFIGS[i]}" -a "$app" --image-label "$label" \
		--remote-only --ha=false --yes; then
		later=("${APPS[@]:i+1}")
		die "the deploy of $app failed; ${later[*]:-no app} not deployed." \
			"Fix the cause (fly logs -a $app) and run this script again."
	fi
done

# --- 7. verify ----------------------------------------------------------------------------

step "7. Verify"
if [ "$DRY_RUN" = 1 ]; then
	say "would wait for the Machines and their checks, submit a transaction to ${NODE_URLS[0]}"
	say "and wait until ${NODE_URLS[*]} report it final (dry run: not done)"
	say ""
	say "Dry run: nothing was changed."
	exit 0
fi
for app in "${APPS[@]}"; do
	deadline=$((SECONDS + WAIT))
	while true; do
		status_json=$(fly_read status -a "$app" --json) || die "cannot read the status of $app"
		if report=$(support health <<<"$status_json"); then
			say "$app: $report"
			break
		else
			[ $? = 3 ] || exit 1 # 3: not healthy yet; anything else: a problem already shown
		fi
		[ "$SECONDS" -lt "$deadline" ] ||
			die "$app is not healthy after $WAIT s: $report (fly logs -a $app)"
		say "$app: $report; waiting"
		sleep 5
	done
done

transaction="deploy check $(date -u +%Y-%m-%dT%H:%M:%SZ) ${LABELS[0]} $$"
say "+ qudag-node submit --url ${NODE_URLS[0]} --wait --timeout $TX_TIMEOUT '$transaction'"
answer=$(QUDAG_API_TOKEN=$KNOWN_API_TOKEN "${QN[@]}" submit --url "${NODE_URLS[0]}" --wait \
	--timeout "$TX_TIMEOUT" "$transaction") ||
	die "the check transaction was not final at ${NODE_URLS[0]}"
tx=$(support tx-id <<<"$answer") || exit 1
for i in "${!APPS[@]}"; do
	result=$(support wait-final "${NODE_URLS[i]}" "$tx" "$TX_TIMEOUT") || exit 1
	say "${APPS[i]} (${NODE_URLS[i]}): transaction $tx $result"
done
say ""
say "Done: ${APPS[*]} run and agree on transaction $tx."
