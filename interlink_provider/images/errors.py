"""Image refusals, each carrying the reason string Kubernetes shows in a container's waiting state,
so the sidecar reports them as the kubelet would without translating exception types."""

from __future__ import annotations

# Reasons of a container's `state.waiting.reason` (the kubelet's images package uses these names).
PULLING_IMAGE = "PullingImage"  # an event reason, not an error: the pull is under way
ERR_IMAGE_PULL = "ErrImagePull"
IMAGE_PULL_BACKOFF = "ImagePullBackOff"  # the caller's, after repeated ErrImagePull
INVALID_IMAGE_NAME = "InvalidImageName"
ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
CREATE_CONTAINER_ERROR = "CreateContainerError"


class ImageError(Exception):
    """An image could not be made ready; `reason` is the Kubernetes reason, the text says why."""

    reason = ERR_IMAGE_PULL

    def __init__(self, image: str, message: str) -> None:
        super().__init__(f"{image}: {message}")
        self.image = image
        self.message = message


class InvalidImageName(ImageError):
    """The reference does not parse: no registry is asked, retrying cannot help."""

    reason = INVALID_IMAGE_NAME


class ErrImagePull(ImageError):
    """The registry refused or could not be reached; `message` is the registry's own words."""

    reason = ERR_IMAGE_PULL


class ErrImageNeverPull(ImageError):
    """imagePullPolicy Never and the image is not in the cache."""

    reason = ERR_IMAGE_NEVER_PULL


class CreateContainerError(ImageError):
    """The image cannot start as it says, e.g. its User is not in its /etc/passwd."""

    reason = CREATE_CONTAINER_ERROR
