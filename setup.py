"""Build hook: the shipped model and the broker templates travel inside the wheel.

``models/`` and ``firmware_config/mosquitto/`` sit at the top of the tree (the
project's fixed shape), outside every package, so a plain wheel would leave them
out. They are copied into ``device/shipped/`` of the build; ``device/resources.py``
finds them there, or in the checkout for an editable install. ``MANIFEST.in``
puts the same files in the sdist, so a wheel built from it (``python -m build``)
carries them too; a build that cannot find one of them fails instead of making
a wheel without a model.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# folder -> (patterns to copy, files that must be among them)
SHIPPED = {
    "models": (("*.tflite", "model_card.json", "model_card.md"),
               ("allscope_blast_int8.tflite", "allscope_blast_float32.tflite", "model_card.json")),
    "firmware_config/mosquitto": (("*",), ("allscope.conf.template", "acl")),
}


class BuildWithShippedFiles(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's folders
        for folder, (patterns, required) in SHIPPED.items():
            missing = [name for name in required if not (Path(folder) / name).is_file()]
            if missing:
                raise SystemExit(f"cannot build allscope: {', '.join(f'{folder}/{m}' for m in missing)} "
                                 "missing (build from a checkout, or from an sdist made with MANIFEST.in)")
            target = Path(self.build_lib) / "device" / "shipped" / Path(folder).name
            target.mkdir(parents=True, exist_ok=True)
            for pattern in patterns:
                for source in sorted(Path(folder).glob(pattern)):
                    if source.is_file():
                        shutil.copy2(source, target / source.name)


setup(cmdclass={"build_py": BuildWithShippedFiles})
