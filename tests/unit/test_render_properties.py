"""Random pod fields never crash translation or rendering: a clear refusal, or a valid script."""

from __future__ import annotations

import subprocess

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from interlink_provider.pods.validate import PodRejected
from tests.podkit import pod, render

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    command=st.lists(text, min_size=1, max_size=3),
    args=st.lists(text, max_size=3),
    env=st.dictionaries(text, text, max_size=3),
    mount=st.one_of(st.just("/data"), st.builds(lambda t: "/" + t, text)),
    sub_path=st.one_of(st.just(""), text),
    flags=st.one_of(st.just(""), st.builds(lambda t: "--comment=" + t, text), text),
    name=st.one_of(st.just("p"), text),
    annotation=text,
)
def test_any_pod_is_refused_clearly_or_renders_a_valid_script(
    tmp_path_factory, command, args, env, mount, sub_path, flags, name, annotation
):
    p = pod(
        [
            {
                "name": "c",
                "image": "busybox",
                "command": command,
                "args": args,
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "volumeMounts": [{"name": "v", "mountPath": mount, "subPath": sub_path}],
            }
        ],
        volumes=[{"name": "v", "emptyDir": {}}],
        annotations={"slurm-job.vk.io/flags": flags, "slurm-job.vk.io/pre-exec": "", "other": annotation},
    )
    p["metadata"]["name"] = name or "p"
    try:
        _, _, script = render(p, str(tmp_path_factory.getbasetemp() / "pods"))
    except PodRejected as exc:
        assert exc.reason
        event(f"refused: {exc.field.split('[')[0]}")
        return
    event("rendered")
    result = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert result.returncode == 0, result.stderr
