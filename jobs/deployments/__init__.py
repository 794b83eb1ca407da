"""Deployment jobs: Ansible through ansible-runner, guarded and streamed into the job log."""
