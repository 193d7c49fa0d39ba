set -e
# Usage: CHECKOUT=<cpu-rank checkout> bash run.sh, with the project venv's bin on PATH
cd "${CHECKOUT:?set CHECKOUT to the cpu-rank checkout}"
export PYTHONPATH="$CHECKOUT"
setp() { python - "$@" <<'P'
import sys, yaml
p = yaml.safe_load(open('params.yaml'))
it, name, lr = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
p['seeds'] = [1]
p['train']['iterations'] = it
base = dict(p['models']['ours_mil_res'])
ov = dict(base['overrides']); ov['lr'] = lr
p['models'][name] = {**base, 'overrides': ov, 'description': f'ours_mil_res, lr {lr}, {it} its (experiment)'}
yaml.safe_dump(p, open('params.yaml', 'w'), sort_keys=False)
P
}
run() { setp "$1" "$2" "$3"; s=$(date +%s); for st in train translate-sets paired; do cxrbench $st --model "$2"; done; echo "TIME $2 $(( $(date +%s) - s ))"; }
run 600 lr1e4_600 1e-4
run 600 lr4e4_600 4e-4
run 1200 lr2e4_1200 2e-4
