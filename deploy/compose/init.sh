#!/bin/sh
# One-shot setup of the compose cluster (the `init` service of deploy/compose.yml), run
# before the nodes start and again, harmlessly, at every `docker compose up`:
#   1. keys: `mirror keys show` on each node's volume creates its Ed25519 node key on first
#      use (data/keys/node.key, mode 0600) and prints the public half;
#   2. trust: every node trusts the two others' public keys (`mirror keys trust`, kept in
#      its catalog), so peer requests between them are accepted and their signed
#      manifests verify; trusting a key twice changes nothing;
#   3. Prometheus: /metrics needs the `metrics.read` action, which the auditor role has,
#      so each node gets an auditor token (`mirror token create`), made once and written
#      to the `tokens` volume that Prometheus mounts read-only (prometheus/prometheus.yml);
#   4. ownership: the volumes were written as root here; they go to the image's non-root
#      user (uid 10001), which the nodes run as.
set -eu
umask 027

for i in 0 1 2; do
    # stdout is the public key; the data dir notice goes to stderr (the service's log).
    eval "key$i=\$(mirror keys show --data-dir /data/node-$i)"
done

for i in 0 1 2; do
    for j in 0 1 2; do
        [ "$i" = "$j" ] && continue
        eval "key=\$key$j"
        mirror keys trust "$key" --label "node-$j" --data-dir "/data/node-$i"
    done
done

for i in 0 1 2; do
    token=/tokens/node-$i
    if [ ! -s "$token" ]; then
        mirror token create --role auditor --name "prometheus-$(date +%s)" --json --data-dir "/data/node-$i" \
            | python -c 'import json, sys; print(json.load(sys.stdin)["token"])' > "$token.tmp"
        mv "$token.tmp" "$token"
    fi
done

chown -R 10001:10001 /data/node-0 /data/node-1 /data/node-2
# Prometheus runs as its own user (nobody); only it and this service mount the volume.
chmod 0644 /tokens/node-0 /tokens/node-1 /tokens/node-2
