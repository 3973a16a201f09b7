# syntax=docker/dockerfile:1
#
# spinal_bidsapp container image: the app, SCT (deep-learning models and PAM50 baked in),
# minc-toolkit-v2 with nist_mni_pipelines (MINC template engine). Runs offline, as a non-root user.
#
#   docker build -t ghcr.io/spinal-bidsapp/spinal_bidsapp:0.1.0 \
#       --build-arg VCS_REF="$(git rev-parse HEAD)" .
#   docker run --rm -v /data/bids:/data:ro -v /data/out:/out \
#       ghcr.io/spinal-bidsapp/spinal_bidsapp:0.1.0 /data /out participant
#
# Base image: python:3.11-slim-bookworm everywhere. Debian bookworm is the base of SCT's own
# runtime image (its Qt/GL runtime libraries are known to work there); Python 3.11 is the newest
# interpreter that scoop 0.7.2.0 (the scoop-era nist_mni_pipelines) was tested with, and antspyx
# ships wheels for it. SCT brings its own Python 3.10 (conda) under /opt/sct, MINC comes from
# conda (minc-forge) under /opt/minc, the app lives in a venv under /opt/venv: three prefixes that
# never share site-packages. Stages: sct, minc, app (venv, nist_mni_pipelines, PAM50 cache),
# runtime-base, test (runtime-base + pytest and tests, used by CI), runtime (default target).
#
# Every version is a build argument. Keep them equal to the constants in the package; the test
# tests/test_containers.py::test_pinned_versions_agree checks it.

ARG SCT_VERSION=7.3
ARG SCT_DEEPSEG_TASKS=spinalcord,spine,rootlets
ARG MINC_VERSION=1.9.18.4
ARG MINC2_SIMPLE_VERSION=v2.2.30
ARG NIST_MNI_PIPELINES_COMMIT=cadc7219e79d6edb90742e1e340f8eee76332006
ARG SCOOP_VERSION=0.7.2.0
ARG PAM50_RELEASE=r20250730
ARG SPINAL_BIDSAPP_VERSION=0.1.0
ARG SPINAL_BIDSAPP_CONTAINER_TAG=ghcr.io/spinal-bidsapp/spinal_bidsapp:${SPINAL_BIDSAPP_VERSION}
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown

# ---------------------------------------------------------------------------------------------
# SCT with its official installer, in place under /opt/sct (SCT_DIR), plus the deepseg models.
FROM python:3.11-slim-bookworm AS sct
ARG SCT_VERSION
ARG SCT_DEEPSEG_TASKS
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        bzip2 ca-certificates curl gcc git libc6-dev \
        libdbus-1-3 libgl1 libglib2.0-0 libxkbcommon-x11-0 libxrender1 \
    && rm -rf /var/lib/apt/lists/*
# -i: install in place (SCT_DIR = the clone); -y: no questions. The installer also fetches SCT's
# binaries, its default data (PAM50 included) and the default model, then validates the install.
RUN git clone --quiet --depth 1 --branch "${SCT_VERSION}" \
        https://github.com/spinalcordtoolbox/spinalcordtoolbox.git /opt/sct \
    && test "$(cat /opt/sct/spinalcordtoolbox/version.txt)" = "${SCT_VERSION}"
WORKDIR /opt/sct
RUN ./install_sct -iy \
    && rm -rf /opt/sct/.git /opt/sct/python/pkgs /opt/sct/install_sct_log.txt /root/.cache
# Models of every task the app runs, then SCT's own run-time check (sct_deepseg reinstalls a model
# that is not valid or whose source URL changed): nothing may be left to download at run time.
RUN echo "${SCT_DEEPSEG_TASKS}" | tr ',' '\n' | while read -r task; do \
        /opt/sct/bin/sct_deepseg "${task}" -install || exit 1; \
    done \
    && /opt/sct/python/envs/venv_sct/bin/python -c 'import sys; from spinalcordtoolbox.deepseg import models as m; stale = [n for t in sys.argv[1].split(",") for n in m.TASKS[t]["models"] if not (m.is_valid(m.find_model_folder_paths(m.folder(n))) and m.is_up_to_date(m.folder(n)))]; sys.exit(f"models that would download at run time: {stale}" if stale else 0)' "${SCT_DEEPSEG_TASKS}" \
    && test -f /opt/sct/data/PAM50/template/PAM50_cord.nii.gz \
    && rm -rf /root/.cache

# ---------------------------------------------------------------------------------------------
# minc-toolkit-v2 (full build: minctracc, param2xfm, EZminc ITK tools) from the minc-forge channel.
FROM mambaorg/micromamba:1.5.10-bookworm-slim AS minc
ARG MINC_VERSION
USER root
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN micromamba create --yes --prefix /opt/minc --channel minc-forge --channel conda-forge \
        "minc-toolkit-v2=${MINC_VERSION}" \
    && micromamba clean --all --yes \
    && for tool in minctracc param2xfm fast_blur itk_resample xfm_normalize.pl xfm2def \
                   xfmconcat xfminvert mincaverage minccalc mincstats mincinfo mincreshape \
                   nii2mnc mnc2nii; do \
        test -x "/opt/minc/bin/${tool}" || { echo "minc-toolkit-v2 lacks ${tool}" >&2; exit 1; }; \
    done \
    && test -f /opt/minc/include/minc2.h
USER mambauser

# ---------------------------------------------------------------------------------------------
# The app in a venv, scoop + minc2-simple + nist_mni_pipelines for the MINC engine, PAM50 cache.
FROM python:3.11-slim-bookworm AS app
ARG MINC2_SIMPLE_VERSION
ARG NIST_MNI_PIPELINES_COMMIT
ARG SCOOP_VERSION
ARG PAM50_RELEASE
ARG SPINAL_BIDSAPP_VERSION
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gcc git libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY --from=minc /opt/minc /opt/minc
RUN python -m venv /opt/venv \
    && pip install "setuptools==75.8.0" "wheel==0.45.1" "cffi==1.17.1" "six==1.17.0" \
        "scoop==${SCOOP_VERSION}"
# minc2-simple is not on PyPI; its build links libminc2 from MINC_TOOLKIT with an rpath to it.
RUN MINC_TOOLKIT=/opt/minc pip install --no-build-isolation \
        "minc2_simple @ git+https://github.com/NIST-MNI/minc2-simple.git@${MINC2_SIMPLE_VERSION}#subdirectory=python" \
    && python -c 'import minc2_simple'
# nist_mni_pipelines (ipl) has no setup.py: a .pth file puts it on the venv's path. Pinned commit,
# with the numpy >= 1.24 aliases fixed (np.float -> np.float64, np.complex -> np.complex128), the
# same change the upstream made in 2024; the app's numpy is >= 1.24.
RUN git clone --quiet https://github.com/vfonov/nist_mni_pipelines.git /opt/nist_mni_pipelines \
    && git -C /opt/nist_mni_pipelines checkout --quiet "${NIST_MNI_PIPELINES_COMMIT}" \
    && rm -rf /opt/nist_mni_pipelines/.git \
    && find /opt/nist_mni_pipelines/ipl -name '*.py' -exec sed -i -E \
        -e 's/\bnp\.float\b([^0-9_]|$)/np.float64\1/g' \
        -e 's/\bnp\.complex\b([^0-9_]|$)/np.complex128\1/g' {} + \
    && ! grep -rnE '\bnp\.(float|complex|int|bool|object)\b([^0-9_]|$)' /opt/nist_mni_pipelines/ipl \
    && echo /opt/nist_mni_pipelines \
        > "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nist_mni_pipelines.pth"
COPY pyproject.toml README.md /src/
COPY spinal_bidsapp /src/spinal_bidsapp
RUN pip install /src \
    && test "$(python -c 'import spinal_bidsapp; print(spinal_bidsapp.__version__)')" = "${SPINAL_BIDSAPP_VERSION}" \
    && python -c 'import ipl.model.generate_nonlinear, scoop, minc2_simple' \
    && python -c 'import sys; from spinal_bidsapp.templates.pam50 import PAM50_RELEASE; sys.exit(PAM50_RELEASE != sys.argv[1])' "${PAM50_RELEASE}"
# PAM50: record the checksum of the pinned release in the cache manifest and unpack it into the
# cache (resolve_pam50 finds it when SCT_DIR is unset, and verifies later downloads against it).
ADD https://github.com/spinalcordtoolbox/PAM50/releases/download/${PAM50_RELEASE}/PAM50-${PAM50_RELEASE}.zip /tmp/PAM50.zip
RUN python -c 'import sys; from pathlib import Path; from spinal_bidsapp.templates.pam50 import install_pam50_archive, record_pam50_checksum; archive, cache = Path(sys.argv[1]), Path(sys.argv[2]); install_pam50_archive(archive, cache_dir=cache, pin=record_pam50_checksum(archive, cache_dir=cache))' \
        /tmp/PAM50.zip /opt/spinal_bidsapp/cache \
    && rm -f /tmp/PAM50.zip

# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime-base
ARG SCT_VERSION
ARG MINC_VERSION
ARG NIST_MNI_PIPELINES_COMMIT
ARG PAM50_RELEASE
ARG SPINAL_BIDSAPP_VERSION
ARG SPINAL_BIDSAPP_CONTAINER_TAG
ARG VCS_REF
ARG BUILD_DATE
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# Qt/GL/D-Bus libraries for SCT, perl for the MINC scripts (xfm_normalize.pl), ssh for scoop
# workers on other nodes, procps for ps/top when debugging.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates libdbus-1-3 libgl1 libglib2.0-0 libgomp1 libxkbcommon-x11-0 \
        libxrender1 openssh-client perl procps \
    && rm -rf /var/lib/apt/lists/*
COPY --from=sct /opt/sct /opt/sct
COPY --from=minc /opt/minc /opt/minc
COPY --from=app /opt/venv /opt/venv
COPY --from=app /opt/nist_mni_pipelines /opt/nist_mni_pipelines
COPY --from=app /opt/spinal_bidsapp /opt/spinal_bidsapp
# SCT's copy of PAM50 comes from the same release as ours: when the files agree, record the
# release in it too, so GeneratedBy names the PAM50 version instead of "unknown".
RUN if diff -rq -x .spinal_bidsapp-source.json /opt/sct/data/PAM50 \
            /opt/spinal_bidsapp/cache/PAM50 >/dev/null; then \
        cp /opt/spinal_bidsapp/cache/PAM50/.spinal_bidsapp-source.json /opt/sct/data/PAM50/; \
    else \
        echo "warning: SCT's PAM50 differs from ${PAM50_RELEASE}; its version stays unknown" >&2; \
    fi
# Non-root user. HOME is writable by any UID (docker run --user, Apptainer) for caches.
RUN groupadd --gid 1000 spinal \
    && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /home/spinal \
        --shell /bin/bash spinal \
    && mkdir -p /home/spinal /work \
    && chmod 1777 /home/spinal /work
ENV SCT_DIR=/opt/sct \
    MINC_TOOLKIT=/opt/minc \
    PATH=/opt/venv/bin:/opt/sct/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/minc/bin \
    PERL5LIB=/opt/minc/perl:/opt/minc/pipeline \
    MNI_DATAPATH=/opt/minc/share \
    MINC_FORCE_V2=1 \
    MINC_COMPRESS=4 \
    VOLUME_CACHE_THRESHOLD=-1 \
    SPINAL_BIDSAPP_CACHE=/opt/spinal_bidsapp/cache \
    SPINAL_BIDSAPP_CONTAINER_TYPE=docker \
    SPINAL_BIDSAPP_CONTAINER_TAG=${SPINAL_BIDSAPP_CONTAINER_TAG} \
    HOME=/home/spinal \
    MPLBACKEND=Agg \
    LANG=C.UTF-8 \
    LC_ALL=C.UTF-8
USER 1000:1000
WORKDIR /work
# Warm the matplotlib font caches of both Pythons (the first run would otherwise build them), and
# check that every engine resolves from inside the image.
RUN python -c 'import matplotlib.font_manager' \
    && /opt/sct/python/envs/venv_sct/bin/python -c 'import matplotlib.font_manager' \
    && python -c 'from spinal_bidsapp.config import sct_dir_from_environment as s; from spinal_bidsapp.engines import resolve_participant_engine as p, resolve_template_engine as t; print(p("sct", sct_dir=s()).version, t("minc").version)' \
    && spinal_bidsapp --version
LABEL org.opencontainers.image.title="spinal_bidsapp" \
      org.opencontainers.image.description="BIDS App for spinal cord MRI: per-subject cord reference and unbiased population templates (SCT ${SCT_VERSION}, minc-toolkit-v2 ${MINC_VERSION})" \
      org.opencontainers.image.version="${SPINAL_BIDSAPP_VERSION}" \
      org.opencontainers.image.source="https://github.com/spinal-bidsapp/spinal_bidsapp" \
      org.opencontainers.image.url="https://github.com/spinal-bidsapp/spinal_bidsapp" \
      org.opencontainers.image.documentation="https://github.com/spinal-bidsapp/spinal_bidsapp/blob/main/docs/installation.md" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.licenses="MIT" \
      io.github.spinal-bidsapp.sct.version="${SCT_VERSION}" \
      io.github.spinal-bidsapp.minc-toolkit.version="${MINC_VERSION}" \
      io.github.spinal-bidsapp.nist-mni-pipelines.commit="${NIST_MNI_PIPELINES_COMMIT}" \
      io.github.spinal-bidsapp.pam50.release="${PAM50_RELEASE}"
ENTRYPOINT ["/opt/venv/bin/spinal_bidsapp"]
CMD ["--help"]

# ---------------------------------------------------------------------------------------------
# Test image for CI (docker build --target test): the runtime plus pytest and the test suite.
FROM runtime-base AS test
USER root
COPY pyproject.toml README.md /src/
COPY spinal_bidsapp /src/spinal_bidsapp
COPY tests /src/tests
RUN pip install --no-cache-dir "/src[test]"
USER 1000:1000
WORKDIR /src
ENTRYPOINT ["/opt/venv/bin/python", "-m", "pytest", "-p", "no:cacheprovider"]
CMD ["-m", "sct", "-rs", "tests"]

# ---------------------------------------------------------------------------------------------
# Default target: the runtime image.
FROM runtime-base AS runtime
