"""Kubernetes manifests for glucose-forecast: a committed kustomize tree plus a generator.

``k8s/kustomize/`` holds the base, components and overlays (everything that is the same for all
patients); :mod:`k8s.render` adds the per-patient resources generated from the configured
patient list and renders each overlay with ``kubectl kustomize``; :mod:`k8s.commands` is the
``glucose-forecast k8s`` subcommand.
"""
