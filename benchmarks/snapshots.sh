#!/usr/bin/env bash
# Prepare a lease of the lent GPU machine (run here, in the repository root, with the project's venv
# active): the wheels the machine lacks go to .whl/, and each NAME=COMMIT argument becomes .snap/NAME/
# (that commit's own package wheel, its benchmarks/ folder and its full hash), so that several commits
# run side by side on one machine (benchmarks/lease_round.sh). Both folders are git-ignored locally:
#
#     bash benchmarks/snapshots.sh A=main X=exp/some-branch
set -euo pipefail
for ignored in /.whl/ /.snap/; do
    grep -qx "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
done

# The versions this project's venv resolves; the machine's image has torch 2.11 and transformers 5.17.
WHEELS=(transformers==5.25.0 huggingface_hub==2.4.0 kernels==0.19.1 tomlkit==0.15.3 datasets==5.2.0
    dill==0.4.1 multiprocess==0.70.19 evaluate==0.4.6 lmms_eval==0.7.3 loguru==0.7.3 numexpr==2.14.2
    openai==3.63.0 httpx2==2.17.0 httpcore2==2.17.0 truststore==0.10.5 jiter==0.19.0 pydantic==2.14.4
    pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 sniffio==1.3.1 tenacity==9.2.1
    python-dotenv==1.2.4 pytz==2026.6 chardet==6.0.0.post1 defusedxml==0.7.1 wcwidth==0.9.5
    zstandard==0.25.0 decord==0.6.0 typing_extensions==4.16.0 idna==3.21)
# pip skips the wheels already in .whl/ and completes a folder that an earlier run left half-filled
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"

for spec in "$@"; do
    name=${spec%%=*} commit=$(git rev-parse "${spec#*=}")
    source=$(mktemp -d)
    rm -rf ".snap/$name" && mkdir -p ".snap/$name"
    git archive "$commit" | tar -x -C "$source"
    (cd "$source" && python3 -m pip wheel -q --no-deps --no-build-isolation -w "$OLDPWD/.snap/$name" .)
    cp -r "$source/benchmarks" ".snap/$name/" && rm -rf ".snap/$name/benchmarks/results" "$source"
    echo "$commit" > ".snap/$name/COMMIT"
    echo ".snap/$name: ${commit:0:7}"
done
