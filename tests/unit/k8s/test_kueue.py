"""A job spec's priority → Kueue's WorkloadPriorityClass label on the RayJob: the mapping,
what wins over it, the operator's class list from the chart, and the RayJob KubeRay's
real CRD still accepts."""

from __future__ import annotations

import json

import pytest

from deepyard.errors import SpecError
from deepyard.k8s import kueue
from deepyard.k8s.render import generated
from deepyard.testing import k8s_schema

from .conftest import EXAMPLE_JOBS, changed, trainjob

CLASSES = kueue.parse_classes(
    json.dumps(
        [
            {"name": "deepyard-high", "value": 10000, "minPriority": 500},
            {"name": "deepyard-low", "value": 100, "minPriority": -1000},
            {"name": "deepyard-normal", "value": 1000, "minPriority": 0},
        ]
    )
)


@pytest.mark.parametrize(
    ("priority", "expected"),
    [
        (-1000, "deepyard-low"),
        (-1, "deepyard-low"),
        (0, "deepyard-normal"),
        (499, "deepyard-normal"),
        (500, "deepyard-high"),
        (1000, "deepyard-high"),
    ],
)
def test_priority_picks_the_highest_class_not_above_it(priority, expected) -> None:
    assert kueue.choose(priority, CLASSES) == expected


def test_below_every_class_the_lowest_and_without_classes_none() -> None:
    assert kueue.choose(-5, CLASSES[:1] + CLASSES[2:]) == "deepyard-normal"
    assert kueue.choose(0, []) is None


def rayjob_labels(priority: int = 0, **kubernetes: str) -> dict[str, str]:
    manifest = changed(trainjob(EXAMPLE_JOBS[0], **kubernetes), "priority", priority)
    return dict(generated(manifest, None, None, CLASSES)[-1]["metadata"]["labels"])


def test_a_queued_rayjob_carries_the_class_of_its_priority(kuberay_crds) -> None:
    manifest = changed(trainjob(EXAMPLE_JOBS[0], queue_name="team-a"), "priority", 700)
    rayjob = generated(manifest, None, None, CLASSES)[-1]
    assert rayjob["metadata"]["labels"][kueue.QUEUE_LABEL] == "team-a"
    assert rayjob["metadata"]["labels"][kueue.PRIORITY_LABEL] == "deepyard-high"
    assert k8s_schema.problems(rayjob, kuberay_crds["RayJob"]) == []
    default = rayjob_labels(queue_name="team-a")  # priority 0
    assert default[kueue.PRIORITY_LABEL] == "deepyard-normal"


def test_explicit_classes_win_and_pods_keep_their_priority_class() -> None:
    named = rayjob_labels(queue_name="q", workload_priority_class="urgent", priority=-800)
    assert named[kueue.PRIORITY_LABEL] == "urgent"
    # a pod PriorityClass alone: Kueue's own fallback to it stays (no label of ours)
    manifest = trainjob(EXAMPLE_JOBS[0], queue_name="q", priority_class="training-high")
    rayjob = generated(manifest, None, None, CLASSES)[-1]
    assert kueue.PRIORITY_LABEL not in rayjob["metadata"]["labels"]
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert head["priorityClassName"] == "training-high"
    # without a queue Kueue ignores the RayJob: no Kueue labels at all
    assert not {kueue.QUEUE_LABEL, kueue.PRIORITY_LABEL} & set(rayjob_labels())


def test_workload_priority_class_must_be_an_object_name() -> None:
    from deepyard.k8s.placement import validate_trainjob

    manifest = trainjob(EXAMPLE_JOBS[0], workload_priority_class="High_Priority")
    with pytest.raises(SpecError) as caught:
        validate_trainjob(manifest["spec"])
    assert "kubernetes.workload_priority_class" in caught.value.problems[0]
    assert "'High_Priority' is not a Kubernetes object name" in caught.value.problems[0]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[{'name': 'x'}]", "not a list of WorkloadPriorityClasses"),
        ('[{"name": "a", "value": 1}]', "[0].minPriority: Field required"),
        ('[{"name": "a", "value": 1, "minPriority": 2000}]', "[0].minPriority: Input should"),
        (
            '[{"name": "a", "value": 1, "minPriority": 0}, '
            '{"name": "b", "value": 2, "minPriority": 0}]',
            "two classes share a minPriority",
        ),
    ],
)
def test_a_bad_class_list_names_the_variable_and_the_fix(text, says) -> None:
    with pytest.raises(kueue.ClassesError) as caught:
        kueue.parse_classes(text)
    message = str(caught.value)
    assert message.startswith(kueue.CLASSES_ENV) and says in message
    assert "give" in message  # the fix: an example, or what to change
