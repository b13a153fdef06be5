"""Pulumi ComponentResources, one per file, each with a typed args class.

Type tokens are ``fleet:<module>:<Type>``; every child is parented to its component and every
component registers its outputs. Layers above the clusters only ever see a Kubernetes provider.
"""
