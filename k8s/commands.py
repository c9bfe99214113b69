"""``glucose-forecast k8s render``: the Kubernetes manifests for the configured patients."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("build/k8s")


def register(subparsers: argparse._SubParsersAction) -> None:
    k8s = subparsers.add_parser(
        "k8s",
        help="render the Kubernetes manifests (kustomize overlays) for the configured patients",
        description=(
            "Kubernetes manifests of glucose-forecast. The committed kustomize tree k8s/kustomize/ "
            "(base, components, overlays) holds what is the same for every patient; the per-patient "
            "resources are generated from the patient list in glucose-forecast.toml."
        ),
    )
    sub = k8s.add_subparsers(dest="k8s_command", metavar="SUBCOMMAND")
    render = sub.add_parser(
        "render",
        help="render every overlay to <out>/<overlay>.yaml (and the kustomize tree to <out>/kustomize)",
        description=(
            "Validate the configuration, generate the per-patient resources (Deployment, Service, "
            "PodDisruptionBudget, HorizontalPodAutoscaler, Ingress paths, HTTPRoutes, the web app's "
            "patient list) and render each overlay with `kubectl kustomize` into <out>/<overlay>.yaml. "
            "Apply one with `kubectl apply -f <out>/minikube.yaml` or "
            "`kubectl apply -k <out>/kustomize/overlays/minikube`. Nothing is written if anything fails."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    render.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    render.add_argument(
        "--overlay",
        action="append",
        metavar="NAME",
        help="render only this overlay (repeatable); default: all of them",
    )
    render.set_defaults(func=_render)
    listing = sub.add_parser("overlays", help="list the overlays and what each one deploys")
    listing.set_defaults(func=_list)
    k8s.set_defaults(func=lambda args: (k8s.print_help(), 2)[1])


def _render(args: argparse.Namespace) -> int:
    from k8s.render import RenderError, render_overlays
    from pipeline.config import load_config

    config = load_config()
    try:
        written = render_overlays(config, args.out, args.overlay)
    except RenderError as exc:
        log.error("%s", exc)
        return 1
    for name, path in written.items():
        print(f"{name:15s} {path}")
    print(f"kustomize tree: {Path(args.out) / 'kustomize'} ({len(config.patient_ids)} patients)")
    return 0


def _list(args: argparse.Namespace) -> int:
    from k8s.render import KUSTOMIZE_DIR, overlay_names

    for name in overlay_names():
        lines = (KUSTOMIZE_DIR / "overlays" / name / "kustomization.yaml").read_text().splitlines()
        header = []
        for line in lines:
            if not line.startswith("#"):
                break
            header.append(line.lstrip("#").strip())
        text = " ".join(header)
        summary = text.split(". ", 1)[0].split(":\n", 1)[0].rstrip(".:") + "."
        print(f"{name:15s} {summary}")
    return 0
