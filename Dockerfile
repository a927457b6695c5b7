# The one image of wheelwright's production stack (docker-compose.yaml): the API server, scheduler,
# dag-processor, triggerer, the index host's worker, every builder worker, airflow-init and the SFTP
# endpoint all run it. The package is installed once, here, with the pinned requirements; nothing is
# installed when a container starts. Processes run as the unprivileged user `wheelwright` (uid 1000);
# only the sftp service runs as root (sshd chroots and switches to each builder's account).
FROM python:3.11-slim-bookworm

# A compiler and headers (builds run `pip wheel` on sdists), the build sandbox (bubblewrap), Pi images
# on any machine (mmdebstrap and arch-test, without which it refuses a foreign architecture;
# qemu-user-static; binfmt_misc is the kernel's, so the Docker host registers
# it, with the F flag: README.md, "Production"), and OpenSSH's server for the index host's SFTP endpoint.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential python3-dev bubblewrap mmdebstrap arch-test qemu-user-static \
      openssh-server ca-certificates \
 && rm -rf /var/lib/apt/lists/* /etc/ssh/ssh_host_*

RUN groupadd --gid 1000 wheelwright \
 && useradd --uid 1000 --gid wheelwright --home-dir /var/lib/wheelwright --no-create-home \
      --shell /usr/sbin/nologin wheelwright

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /opt/wheelwright

# Dependencies first (their layer survives changes to our code), every version pinned.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The package, with sql/ and data/ as package data; then the DAGs and plugins Airflow reads from here.
COPY pyproject.toml ./
COPY include ./include
COPY sql ./sql
COPY data ./data
RUN pip install --no-deps . && rm -rf build include/*.egg-info
COPY dags ./dags
COPY plugins ./plugins

# Folders the named volumes start from (a fresh volume takes their owner and mode):
#   /var/lib/wheelwright        WHEELWRIGHT_HOME (AIRFLOW_HOME inside it, build folders, images)
#   /srv/wheelwright/www        the published tree
#   /var/log/wheelwright        Airflow's task logs (nginx's too)
#   /srv/wheelwright/incoming   the index host's incoming folder (the worker's view): root's, group
#                               wheelwright, 0751 (builders pass through, never list); .intake in it
#                               is the index host's own; the sftp service adds one folder per builder
#                               account (the account's, group wheelwright, 2770) when it starts
#   /srv/wheelwright/sftp       the builders' chroot: root's, 0755, as sshd demands; in it incoming/,
#                               the same volume
RUN install -d -o wheelwright -g wheelwright -m 0750 /var/lib/wheelwright /var/log/wheelwright \
 && install -d -o wheelwright -g wheelwright -m 0755 /srv/wheelwright/www \
 && install -d -o root -g wheelwright -m 0751 /srv/wheelwright/incoming /srv/wheelwright/sftp/incoming \
 && install -d -o wheelwright -g wheelwright -m 0700 /srv/wheelwright/incoming/.intake \
      /srv/wheelwright/sftp/incoming/.intake \
 && chmod 0755 /srv/wheelwright/sftp

USER wheelwright
CMD ["airflow", "version"]
