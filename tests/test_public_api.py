"""The curated public surface of ``slm_mux`` (a change here is a deliberate API change)."""

import slm_mux


def test_exported_names() -> None:
    assert sorted(slm_mux.__all__) == [
        "Answer",
        "BackendError",
        "Decision",
        "FormatError",
        "InputError",
        "Member",
        "Mux",
        "MuxAnswer",
        "Question",
        "Sample",
        "SlmMuxError",
        "Store",
        "StoreError",
        "Task",
        "__version__",
        "decide",
        "get_task",
        "select",
        "task_names",
    ]
    for name in slm_mux.__all__:
        assert hasattr(slm_mux, name)


def test_importing_the_package_stays_light() -> None:
    import subprocess
    import sys

    heavy = ("torch", "transformers", "sympy", "matplotlib", "openai")
    code = f"import sys, slm_mux; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
