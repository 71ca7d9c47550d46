"""The run folder `<out>/<arch>-<depth>-s<seed>/`: its one owner.

folder.py (RunDir) decides a run's state and does every write; files.py holds the file
formats and their strict readers; lock.py the one-trainer-per-run lock and heartbeat.
"""
