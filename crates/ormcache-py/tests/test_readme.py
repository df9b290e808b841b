"""The README's Python example runs as written (its Redis URL pointed at the test's server)."""

import re

from conftest import REPO


def test_readme_python_example(redis_url, capsys):
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace("redis://localhost:6379", redis_url)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "{'id': 1, 'name': 'John'}"
    assert out[1].startswith("{'id': 7} {'l1': ")
