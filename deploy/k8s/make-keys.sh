#!/bin/sh
# Make the mirror nodes' signing keys and print the Secret `mirror-keys` that carries them
# (statefulset.yaml): one Ed25519 private key per pod (mirror-0.key, ...) and `trust`, the
# comma-separated public keys every node is told to trust (MIRROR_PEERS_TRUST).
#
#   sh deploy/k8s/make-keys.sh [REPLICAS] | kubectl apply -n mirror -f -
#
# Needs the `mirror` command (pip install ., or run this inside the image:
#   docker run --rm --entrypoint sh -v "$PWD/deploy/k8s:/k8s:ro" model-mirror /k8s/make-keys.sh
# ) and writes nothing but temporary files, removed at the end. Keep the Secret as you
# keep any private key; a pod keeps the key it installed first even if the Secret changes.
set -eu
replicas=${1:-3}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

trust=""
i=0
while [ "$i" -lt "$replicas" ]; do
    mkdir -p "$dir/mirror-$i"
    # Creates the node key on first use and prints its public half (the notice goes to stderr).
    pub=$(mirror keys show --data-dir "$dir/mirror-$i" 2>/dev/null)
    trust="${trust:+$trust,}$pub"
    i=$((i + 1))
done

cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: mirror-keys
  labels:
    app.kubernetes.io/name: model-mirror
type: Opaque
stringData:
  trust: "$trust"
YAML
i=0
while [ "$i" -lt "$replicas" ]; do
    echo "  mirror-$i.key: |"
    sed 's/^/    /' "$dir/mirror-$i/keys/node.key"
    i=$((i + 1))
done
