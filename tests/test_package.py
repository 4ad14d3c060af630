from __future__ import annotations

import pytest

from poisonscan import code_version


def test_code_version_of_modules_and_packages() -> None:
    one = code_version("steps.train")
    assert len(one) == 16 and one == code_version("steps.train")
    # a package stands for all of its modules, so it differs from any single one
    assert code_version("steps") not in (one, code_version("steps.common"))
    assert code_version("steps.train", "training") == code_version("training", "steps.train")
    with pytest.raises(ValueError, match="no module or package poisonscan.nope"):
        code_version("nope")
