"""What people look at: rank-list pictures with an index page, and PNG plots of a run."""
from bpm.vis.plots import plot_cmc_curves, plot_training_curves, write_run_plots
from bpm.vis.rank_list import choose_queries, draw_rank_list, rank_list

__all__ = ["choose_queries", "draw_rank_list", "plot_cmc_curves", "plot_training_curves", "rank_list",
           "write_run_plots"]
