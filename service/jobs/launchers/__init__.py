"""Launchers: how a job's runner process is started, watched and stopped."""

from service.jobs.launchers.base import Launcher, RunnerState, make_launcher

__all__ = ["Launcher", "RunnerState", "make_launcher"]
