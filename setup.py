"""ament_python package definition for vl_distill_ros."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "vl_distill_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/splits", glob("config/splits/*.yaml")),
        (f"share/{PACKAGE}/config/ablation", glob("config/ablation/*.yaml")),
    ],
    package_data={PACKAGE: ["py.typed", "bundles/*.vdb", "bundles/*.onnx"]},
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="vl_distill_ros maintainers",
    maintainer_email="maintainers@vl-distill-ros.dev",
    description="Open-vocabulary perception for ROS 2 distilled from a vision-language teacher.",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "vl-distill = vl_distill_ros.cli:main",
            "vl_distill_node = vl_distill_ros.ros.node:main",
            "vl_distill_lifecycle_node = vl_distill_ros.ros.lifecycle_node:main",
        ],
    },
)
