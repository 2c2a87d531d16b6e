"""Provisioner daemons and the provisioners they run (echo, exec, terraform) over one process runner. This side
never imports the store: a daemon reaches jobs only through the queue port."""
