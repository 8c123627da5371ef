"""Build hook: the shipped model and the broker templates travel inside the wheel.

``models/`` and ``firmware_config/mosquitto/`` sit at the top of the tree (the
project's fixed shape), outside every package, so a plain wheel would leave them
out. They are copied into ``device/shipped/`` of the build; ``device/resources.py``
finds them there, or in the checkout for an editable install.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SHIPPED = {"models": ("*.tflite", "model_card.json", "model_card.md"),
           "firmware_config/mosquitto": ("*",)}


class BuildWithShippedFiles(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's folders
        for folder, patterns in SHIPPED.items():
            target = Path(self.build_lib) / "device" / "shipped" / Path(folder).name
            target.mkdir(parents=True, exist_ok=True)
            for pattern in patterns:
                for source in sorted(Path(folder).glob(pattern)):
                    if source.is_file():
                        shutil.copy2(source, target / source.name)


setup(cmdclass={"build_py": BuildWithShippedFiles})
