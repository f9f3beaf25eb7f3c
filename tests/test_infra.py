"""The cluster manifests and the image definition agree with the code and with each other."""

import re
import shlex
import tomllib

import ray
import yaml

from cai_ray import __version__
from cai_ray.cli import build_parser
from tests.conftest import REPO

INFRA = REPO / "infra"


def _dockerfile() -> str:
    return (INFRA / "Dockerfile").read_text()


def test_the_image_copies_what_exists_and_installs_real_extras():
    text = _dockerfile()
    for source in re.findall(r"^COPY (?:--\S+ )*(.+?) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"Dockerfile copies missing {path}"
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for spec in re.findall(r"EXTRAS=([\w,]+)", text):
        assert set(spec.split(",")) <= set(extras), spec
    base = re.search(r"ARG BASE_IMAGE=rayproject/ray:([\d.]+)-py311", text)
    assert base and base.group(1) == ray.__version__


def _kuberay(name: str) -> dict:
    return yaml.safe_load((INFRA / "kuberay" / name).read_text())


def test_kuberay_cluster_groups_match_their_pods():
    cluster = _kuberay("raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster"
    assert cluster["spec"]["rayVersion"] == ray.__version__
    head = cluster["spec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the driver only, never actors
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    for name, group in groups.items():
        (container,) = group["template"]["spec"]["containers"]
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], name
        assert group["rayStartParams"]["num-cpus"] == resources["limits"]["cpu"], name
        assert container["image"].startswith(f"cai-ray:{__version__}"), name
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        gpus = resources["limits"].get("nvidia.com/gpu")
        assert group["rayStartParams"].get("num-gpus") == gpus, name
    assert groups["gpu"]["rayStartParams"]["num-gpus"] == "1"
    assert groups["gpu"]["template"]["spec"]["containers"][0]["image"].endswith("-gpu")


def test_kuberay_job_targets_the_cluster_with_a_valid_command():
    cluster, job = _kuberay("raycluster.yaml"), _kuberay("rayjob.yaml")
    assert job["kind"] == "RayJob"
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    program, *args = shlex.split(job["spec"]["entrypoint"])
    assert program == "cai-ray"
    parsed = build_parser().parse_args(args)
    assert parsed.command == "synth" and parsed.config.startswith("s3://")


def test_autoscaler_config_passes_rays_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((INFRA / "autoscaler" / "aws.yaml").read_text())
    validate_config(prepare_config(config))
    assert config["available_node_types"]["head"]["resources"] == {"CPU": 0}
    assert config["docker"]["image"].endswith(f"/cai-ray:{__version__}")
    gpu = config["available_node_types"]["gpu"]
    assert gpu["resources"]["GPU"] == 1 and gpu["docker"]["worker_image"].endswith("-gpu")
