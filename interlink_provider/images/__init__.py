"""Container images for pods (issue #19), staged like data: a Kubernetes image reference is
resolved to a digest, pulled once into a content-addressed cache on the site's shared
filesystem, unpacked for an unprivileged runtime (ch-run), and run from there with no network.

Domain-free on purpose: nothing here knows pods, sidecars or schedulers; the sidecar passes
references, pull policies, credentials and the digests its live pods use.

  reference  Kubernetes image names, normalised as the kubelet does, and the site's mirrors
  config     the image configuration (Entrypoint, Cmd, Env, WorkingDir, User) read from OCI JSON
  command    Kubernetes' rule joining the image's Entrypoint/Cmd/Env/WorkingDir with a container's
  errors     refusals carrying the reasons Kubernetes shows (ErrImagePull, InvalidImageName, ...)
  backoff    ImagePullBackOff: when a failed pull may be tried again, on the kubelet's schedule
  credentials  imagePullSecrets (.dockerconfigjson) matched to a reference's registry
  tools      skopeo and umoci run as subprocesses (never through a shell), with their errors parsed
  cache      the content-addressed cache: resolve, single-flight pull, unpack, publish, policy, LRU
  pins       which cached image each container of a pod runs: a bash file its job script sources
"""
