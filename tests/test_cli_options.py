"""Each command-line option is declared once: an option several CLIs share comes from a parent
parser of crm_core.cli_options, so no two ``add_argument`` calls in crm_core, demo or app.py
declare the same option with the same default, type, choices and help."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def declarations(source: str) -> list[tuple[str, int]]:
    """(the call without its parser, line) of every ``<parser>.add_argument(...)`` in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument":
            found.append((ast.unparse(ast.Call(func=ast.Name("add_argument"), args=node.args, keywords=node.keywords)),
                          node.lineno))
    return found


def repeated(files: dict[str, str]) -> dict[str, list[str]]:
    places: dict[str, list[str]] = defaultdict(list)
    for name, source in files.items():
        for call, line in declarations(source):
            places[call].append(f"{name}:{line}")
    return {call: where for call, where in places.items() if len(where) > 1}


def test_no_option_is_declared_twice() -> None:
    paths = sorted((ROOT / "crm_core").rglob("*.py")) + sorted((ROOT / "demo").rglob("*.py")) + [ROOT / "app.py"]
    twice = repeated({str(p.relative_to(ROOT)): p.read_text(encoding="utf-8") for p in paths})
    assert not twice, "declare these once in crm_core/cli_options.py and list it in parents=[...]:\n" + \
        "\n".join(f"{call}: {', '.join(where)}" for call, where in twice.items())


def test_the_check_sees_a_repeated_option() -> None:
    device = 'p.add_argument("--device", default="cpu", help="cpu | cuda")\n'
    assert list(repeated({"a.py": device, "b.py": "q." + device[2:]})) == [
        "add_argument('--device', default='cpu', help='cpu | cuda')"]
    assert not repeated({"a.py": device, "b.py": device.replace("cpu | cuda", "auto | cpu | cuda")})


def test_a_cli_with_shared_options_parses_them() -> None:
    from crm_core.evaluate import get_args_parser as evaluate_parser
    from crm_core.segment import SegConfig, get_args_parser as segment_parser
    from crm_core.train_config import TrainConfig, get_args_parser as train_parser

    args = evaluate_parser().parse_args(["--checkpoint", "x.pt", "--cam-method", "gradcam", "--device", "cuda"])
    assert (args.checkpoint, args.cam_method, args.device, args.batch_size, args.data_root) == \
        ("x.pt", "gradcam", "cuda", 16, None)
    # a training run's options default to its own config's fields
    for parser, config in ((train_parser(), TrainConfig()), (segment_parser(), SegConfig())):
        defaults = parser.parse_args([] if isinstance(config, TrainConfig) else ["--masks", "gt", "--name", "n"])
        assert (defaults.workers, defaults.log_every, defaults.ckpt_every, defaults.batch_size, defaults.device) == \
            (config.workers, config.log_every, config.ckpt_every, config.batch_size, config.device)
