from remote_agents.controller.status import Outcome, conditions_for, same_status, status_update


def test_kstatus_conditions_and_transition_times_only_move_on_flips():
    first = conditions_for(Outcome(False, "Creating", "creating", reconciling=True), 1, None)
    by_type = {c["type"]: c for c in first}
    assert by_type["Ready"]["status"] == "False" and by_type["Reconciling"]["status"] == "True"
    assert by_type["Stalled"]["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in first)
    ready = conditions_for(Outcome(True, "Ready", "running"), 1, first)
    again = conditions_for(Outcome(True, "Ready", "running"), 1, ready)
    assert again == ready


def test_same_status_ignores_transition_times_but_not_content():
    conditions = conditions_for(Outcome(True, "Ready", "ok"), 2, None)
    current = {"phase": "Ready", "observedGeneration": 2, "conditions": conditions}
    moved = [{**c, "lastTransitionTime": "2030-01-01T00:00:00Z"} for c in conditions]
    assert same_status(current, {"phase": "Ready", "conditions": moved})
    assert not same_status(current, {"phase": "Paused"})


def test_status_update_adds_extra_conditions_and_writes_nothing_when_unchanged():
    done = Outcome(True, "Succeeded", "exit 0")
    first = status_update({}, done, 3, (("Complete", True, "Succeeded"),), phase="Succeeded", exitCode=0)
    assert [c["type"] for c in first["conditions"]] == ["Ready", "Reconciling", "Stalled", "Complete"]
    complete = first["conditions"][-1]
    assert complete["status"] == "True" and complete["message"] == "exit 0" and complete["observedGeneration"] == 3
    assert first["observedGeneration"] == 3 and first["phase"] == "Succeeded" and first["exitCode"] == 0
    assert status_update(first, done, 3, (("Complete", True, "Succeeded"),), phase="Succeeded", exitCode=0) is None
    changed = status_update(first, done, 3, (("Complete", True, "Succeeded"),), phase="Succeeded", exitCode=1)
    assert changed["exitCode"] == 1
    assert changed["conditions"][-1]["lastTransitionTime"] == complete["lastTransitionTime"]
